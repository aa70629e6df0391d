"""How a tile's validity mask is kept in the store: zlib of its packed bits, empty = all valid.

Part of the on-disk format (``masks`` array of LAYOUT.md); the store and the decoders share it."""

from __future__ import annotations

import zlib

import numpy as np

__all__ = ["decode_mask", "encode_mask"]


def encode_mask(valid: np.ndarray) -> bytes:
    """A tile's validity mask, compactly (zlib of packbits); empty when every pixel is valid.

    Args:
        valid: a tile's boolean mask (True = valid).

    Returns:
        The encoded mask, ``b""`` when all valid (the common case costs nothing).
    """
    if valid.all():
        return b""
    return zlib.compress(np.packbits(valid, axis=None).tobytes(), 9)


def decode_mask(data: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_mask`.

    Args:
        data: an encoded mask (``b""`` = all valid).
        shape: the tile's ``(height, width)``.

    Returns:
        The boolean mask.
    """
    if not data:
        return np.ones(shape, dtype=bool)
    bits = np.unpackbits(np.frombuffer(zlib.decompress(data), dtype=np.uint8))
    return bits[: shape[0] * shape[1]].reshape(shape).astype(bool)
