"""The self-describing tile string: header, per-group entropy-coded streams, CRC-32 trailer.

Layout (little-endian), format versions 1 and 2::

    magic        4s   b"GEOC"
    version      u8   FORMAT_VERSION
    arch         u8 length + utf-8
    digest       8s   first 8 bytes of the weights' SHA-256 (see codec.weights.state_digest)
    quality      u8   shipped quality index, 0 = not a shipped checkpoint
    dtype        u8   1 = uint8, 2 = uint16
    bits         u8   significant bits (peak = 2**bits - 1)
    channels     u16  bands in the tile
    height       u16  tile height before padding
    width        u16  tile width before padding
    pad_h, pad_w u16  padded size the model saw (multiple of the model's downsampling factor)
    halo         u8   (version 3) latent pixels of context on each side the encoder saw
    rate         u16  (version 4) rate level of a variable-rate model in thousandths
                      (0..65534; the level the encoder's gains were set to, which the decoder's
                      inverse gains must match); 65535 = a fixed-rate model
    ranges       (version 5) per band: lo u16, hi u16, the values mapped to the model's 0 and 1
                      (the scene's range; versions 1-4 map 0 .. 2**bits - 1)
    groups       u8   band groups (3 bands each; see tile_codec), each followed by
      streams    u8   count, then for each: u32 length + bytes
    crc32        u32  zlib.crc32 of everything before it

Bits per pixel computed from ``len(string)`` therefore count the header and checksum too.

Version 1 codes a joint (autoregressive) model's latent symbols in raster order, versions 2 and 3
by wavefront (diagonal groups of positions that do not depend on each other,
:func:`geocompress.codec.entropy.schedule`), which lets the decoder evaluate a whole group at once.
Version 3 adds ``halo``: the tile's latent was computed by the analysis transform over the tile plus
``halo`` latent pixels (``16 * halo`` pixels) of its neighbours on each side, so that the latent
field is continuous across tile borders (a scene decoder synthesizes each tile from its latent
plus the same halo of its neighbours' latents). Version 4 adds ``rate``, written only by
variable-rate models (:mod:`geocompress.models.variable_rate`); fixed-rate models still write
version 3, byte for byte as before. Version 5 adds ``ranges``: each band's values ``lo .. hi``
map to the model's 0 .. 1 instead of ``0 .. 2**bits - 1`` (a 16-bit scene whose values fill a
fraction of its bit depth is stretched to the contrast the model was trained on); it always
carries the rate field (65535 for a fixed-rate model). Strings without ranges are written as
before (3 or 4). All five are read.

Limitation (issue 36, item 13): versions 1 and 2 have the same layout, and the CRC binds nothing
against an edit (anyone can recompute it). Weights that wrote both (the shipped fixed-rate q1-q4,
``tile_codec.LEGACY_WEIGHTS``) therefore accept a bare string whose version byte was changed
between 1, 2 and 3 (without a halo byte) and decode its symbols in the other order. Closing this
for bare strings would need a format change; inside a store the tiles' version is bound by the
store (``tile_format_version``, digest-covered, checked for every tile before decoding), in stores
written since that record exists.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import (
    CorruptStreamError,
    ForeignStreamError,
    TruncatedStreamError,
    UnsupportedVersionError,
)

MAGIC = b"GEOC"
FORMAT_VERSION = 3          # what fixed-rate models write
RATE_VERSION = 4            # what variable-rate models write
RANGE_VERSION = 5           # what any model writes for tiles coded with value ranges
READ_VERSIONS = (1, 2, 3, 4, 5)
SYMBOL_ORDER = {1: "raster", 2: "wavefront", 3: "wavefront", 4: "wavefront", 5: "wavefront"}
RATE_SCALE = 1000           # rate levels travel as integer thousandths
NO_RATE = 0xFFFF  # joint models' symbol order
DTYPES = {1: np.dtype("uint8"), 2: np.dtype("uint16")}
DTYPE_CODES = {v: k for k, v in DTYPES.items()}
_FIXED = struct.Struct("<8sBBBHHHHH")


@dataclass(frozen=True)
class TileHeader:
    """What a tile string says about itself: the weights that coded it (architecture, first 8 bytes
    of the digest, quality or rate level), the pixels (dtype, significant bits, channels, size and
    padded size) and how (format version, halo). Enough for a decoder to refuse strings of other
    weights and to rebuild the tile without any store metadata.
    """
    arch: str
    digest: bytes
    quality: int
    dtype: np.dtype
    bits: int
    channels: int
    height: int
    width: int
    pad_h: int
    pad_w: int
    version: int = FORMAT_VERSION
    halo: int = 0
    rate: float | None = None   # variable-rate models' level (a multiple of 1 / RATE_SCALE)
    ranges: tuple[tuple[int, int], ...] | None = None  # per band (lo, hi) -> 0 .. 1 (version 5)

    def band_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """Per band, the value that maps to the model's 0 and the span that maps to 1.

        Returns:
            ``(lo, span)``, float64 arrays of one entry per band: ``ranges`` where the header
            has them, else ``0`` and ``2**bits - 1`` (versions 1-4).
        """
        if self.ranges is None:
            return np.zeros(self.channels), np.full(self.channels, float(2 ** self.bits - 1))
        r = np.asarray(self.ranges, dtype=np.float64)
        return r[:, 0], r[:, 1] - r[:, 0]


@dataclass
class TileString:
    """A parsed tile string: its header and, per band group, the entropy-coded streams."""
    header: TileHeader
    groups: list[list[bytes]] = field(default_factory=list)


def rate_code(rate: float) -> int:
    """``rate`` as the header's integer thousandths; a rate it cannot hold is an error.

    Args:
        rate: a variable-rate model's level.

    Returns:
        The level in thousandths, as the header stores it.

    Raises:
        ValueError: the level is negative or too large for the header's 16 bits.
    """
    code = round(float(rate) * RATE_SCALE)
    if not 0 <= code < NO_RATE:
        raise ValueError(f"rate level {rate} does not fit the tile header (0..{(NO_RATE - 1) / RATE_SCALE})")
    return code


def quantize_rate(rate: float) -> float:
    """The level a header carries for ``rate``: the encoder codes at exactly this level.

    Args:
        rate: the level asked for.

    Returns:
        The nearest level the header can carry.

    Raises:
        ValueError: see :func:`rate_code`.
    """
    return rate_code(rate) / RATE_SCALE


def check_ranges(ranges, channels: int, bits: int) -> None:
    """Value ranges a tile can be coded with: one ``(lo, hi)`` per band, integers with
    ``0 <= lo < hi <= 2**bits - 1``.

    Args:
        ranges: per band ``(lo, hi)``.
        channels: the tile's bands.
        bits: the tile's significant bits.

    Raises:
        ValueError: naming the first range that is not one.
    """
    top = 2 ** int(bits) - 1
    if len(ranges) != channels:
        raise ValueError(f"{len(ranges)} value ranges for {channels} bands")
    for b, (lo, hi) in enumerate(ranges):
        if not (float(lo).is_integer() and float(hi).is_integer() and 0 <= lo < hi <= top):
            raise ValueError(f"band {b + 1}: value range {lo}..{hi} is not one of "
                             f"0 <= lo < hi <= {top} (integers)")


def pack(tile: TileString) -> bytes:
    """Serialize a tile string: magic, version, header, band groups of length-prefixed streams and a
    CRC-32 of everything before it (so damage is detected before any stream is decoded).

    Args:
        tile: the header and streams.

    Returns:
        The string's bytes (format :data:`RANGE_VERSION` when the header carries value ranges,
        :data:`RATE_VERSION` when it carries a rate, else :data:`FORMAT_VERSION`).

    Raises:
        ValueError: a rate the header cannot hold (:func:`rate_code`).
    """
    h = tile.header
    arch = h.arch.encode()
    out = bytearray(MAGIC)
    version = (RANGE_VERSION if h.ranges is not None
               else FORMAT_VERSION if h.rate is None else RATE_VERSION)
    out += struct.pack("<BB", version, len(arch)) + arch
    out += _FIXED.pack(h.digest[:8].ljust(8, b"\0"), h.quality, DTYPE_CODES[np.dtype(h.dtype)],
                       h.bits, h.channels, h.height, h.width, h.pad_h, h.pad_w)
    out += struct.pack("<B", h.halo)
    if version >= RATE_VERSION:
        out += struct.pack("<H", NO_RATE if h.rate is None else rate_code(h.rate))
    if h.ranges is not None:
        check_ranges(h.ranges, h.channels, h.bits)
        out += struct.pack(f"<{2 * h.channels}H", *(v for lo_hi in h.ranges for v in lo_hi))
    out += struct.pack("<B", len(tile.groups))
    for streams in tile.groups:
        out += struct.pack("<B", len(streams))
        for s in streams:
            out += struct.pack("<I", len(s)) + s
    out += struct.pack("<I", zlib.crc32(out))
    return bytes(out)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        end = self.pos + n
        if end > len(self.data) - 4:  # the last 4 bytes are the checksum
            raise TruncatedStreamError(
                f"tile string truncated (or its length fields damaged): {what} needs bytes up to {end + 4}, string has "
                f"{len(self.data)}")
        out = self.data[self.pos:end]
        self.pos = end
        return out

    def unpack(self, fmt: str | struct.Struct, what: str) -> tuple:
        s = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        return s.unpack(self.take(s.size, what))


def read_header(data: bytes) -> tuple[TileHeader, _Reader]:
    """Parse and check only the header (cheap: no streams, no checksum), for callers that decide
    from it alone, e.g. whether a string was written by the weights at hand.

    Args:
        data: a tile string.

    Returns:
        The header, and the reader positioned after it (for :func:`unpack`).

    Raises:
        TypeError: ``data`` is not bytes.
        TruncatedStreamError: shorter than its header.
        ForeignStreamError: not a geocompress tile string (wrong magic).
        UnsupportedVersionError: a format version this geocompress does not read.
        CorruptStreamError: impossible header values (dtype, bits, shape, missing rate).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"tile string must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        if MAGIC.startswith(data[:4]) and len(data) < 4:
            raise TruncatedStreamError(f"tile string truncated to {len(data)} bytes")
        raise ForeignStreamError(
            f"not a geocompress tile string (starts with {data[:4]!r}, expected {MAGIC!r})")
    r = _Reader(data)
    r.pos = 4
    version, arch_len = r.unpack("<BB", "format version")
    if version not in READ_VERSIONS:
        raise UnsupportedVersionError(
            f"tile string has format version {version}; this geocompress reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}"
            + (" (upgrade geocompress)" if version > max(READ_VERSIONS) else ""))
    arch = r.take(arch_len, "architecture name").decode("utf-8", "replace")
    digest, quality, dcode, bits, c, h, w, ph, pw = r.unpack(_FIXED, "header")
    if dcode not in DTYPES:
        raise CorruptStreamError(f"tile header names unknown dtype code {dcode}")
    (halo,) = r.unpack("<B", "halo") if version >= 3 else (0,)
    rate, ranges = None, None
    if version >= RATE_VERSION:
        (code,) = r.unpack("<H", "rate")
        if code == NO_RATE and version == RATE_VERSION:
            raise CorruptStreamError("tile header of a variable-rate string carries no rate")
        rate = None if code == NO_RATE else code / RATE_SCALE
    native = 8 * DTYPES[dcode].itemsize
    if not 1 <= bits <= native:
        raise CorruptStreamError(f"tile header says {bits} bits for a {DTYPES[dcode]} tile")
    if version >= RANGE_VERSION:
        flat = r.unpack(f"<{2 * c}H", "value ranges")
        ranges = tuple(zip(flat[0::2], flat[1::2]))
        try:
            check_ranges(ranges, c, bits)
        except ValueError as e:
            raise CorruptStreamError(f"tile header: {e}") from None
    header = TileHeader(arch, digest, quality, DTYPES[dcode], bits, c, h, w, ph, pw, version, halo,
                        rate, ranges)
    if min(c, h, w) < 1 or ph < h or pw < w:
        raise CorruptStreamError(f"tile header has an impossible shape: {c} x {h} x {w} padded to "
                                 f"{ph} x {pw}")
    return header, r


def unpack(data: bytes) -> TileString:
    """Parse and verify a tile string; raises a :class:`CodecError` subclass naming the problem.

    Args:
        data: a tile string.

    Returns:
        Its header and streams.

    Raises:
        CodecError: a subclass naming the problem (as :func:`read_header`, plus a truncated
            stream, trailing bytes or a checksum mismatch as :class:`CorruptStreamError` /
            :class:`TruncatedStreamError`).
    """
    header, r = read_header(data)
    (n_groups,) = r.unpack("<B", "group count")
    groups = []
    for g in range(n_groups):
        (n_streams,) = r.unpack("<B", f"group {g} stream count")
        streams = []
        for s in range(n_streams):
            (length,) = r.unpack("<I", f"group {g} stream {s} length")
            streams.append(r.take(length, f"group {g} stream {s} ({length} bytes)"))
        groups.append(streams)
    data = r.data
    if r.pos != len(data) - 4:
        raise CorruptStreamError(
            f"tile string has {len(data) - 4 - r.pos} unexpected bytes before its checksum")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise CorruptStreamError("tile string checksum mismatch: the bytes were altered or "
                                 "damaged after encoding")
    return TileString(header, groups)
