"""Each band's range of valid values over a whole scene: what the codec maps to the model's 0 .. 1.

Why: the models are trained on 16-bit scenes stretched band by band to their full contrast
(:mod:`geocompress.training.radiometry`), while a sensor's values usually fill a fraction of its
bit depth (Sentinel-2 reflectances of a few hundred to a few thousand in 12 bits). Scaled by
``2**bits - 1`` the model sees a dim, low-contrast image it was not trained on and spends its bits
and its ceiling on a fraction of the range; scaled from the band's own ``min .. max`` it sees the
contrast it knows, and its errors shrink by the stretch factor in the scene's units
(``catalogs/value_range.md``). The range is the exact minimum and maximum of the valid pixels (no
percentile: nothing is clipped), one pass over the scene, in blocks on the Dask client like the
encode, and one for the whole scene, so that neighbouring tiles share one mapping (halo coding
synthesizes a tile from its neighbours' latents).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio

from ..geo import SceneReader, TileGrid

# GDAL's block cache while a task reads a scene: each block is read once, the cache buys nothing
GDAL_CACHE_MB = 64

# how a scene's values map to the model's 0 .. 1 (TilingChoice.value_range)
VALUE_RANGES = ("scene", "bits")
# a band is stretched to its own range where that spans less than this share of its bit depth
STRETCH_BELOW = 0.85


def scan_block_range(paths: Sequence[str], grid: dict, rows: tuple[int, int],
                     cols: tuple[int, int]) -> list[tuple[int, int]] | None:
    """Per band, the smallest and largest valid value in a block of tiles (the scan's task).

    Args:
        paths: the source files.
        grid: the tile grid, as :meth:`~geocompress.geo.TileGrid.to_dict` gives it.
        rows: the block's tile rows, ``(start, stop)``.
        cols: its tile columns.

    Returns:
        ``[(lo, hi), ...]`` per band, or None for a block without valid pixels.

    Raises:
        SceneReadError: a tile that cannot be read (a truncated or damaged file).
    """
    g = TileGrid.from_dict(grid)
    lo = hi = None
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), SceneReader([Path(p) for p in paths]) as reader:
        for r in range(*rows):
            for c in range(*cols):
                pixels, valid = reader.read_tile_checked(g, r, c)
                if not valid.any():
                    continue
                v = pixels[:, valid]
                blo, bhi = v.min(axis=1).astype(np.int64), v.max(axis=1).astype(np.int64)
                lo = blo if lo is None else np.minimum(lo, blo)
                hi = bhi if hi is None else np.maximum(hi, bhi)
    return None if lo is None else [(int(a), int(b)) for a, b in zip(lo, hi)]


def merge_ranges(parts: Sequence[list[tuple[int, int]] | None], bands: int
                 ) -> list[tuple[int, int]]:
    """The scene's ranges from its blocks'.

    Args:
        parts: :func:`scan_block_range`'s results.
        bands: the scene's bands.

    Returns:
        Per band ``(lo, hi)``; ``(0, 0)`` for every band of a scene without valid pixels.
    """
    found = [p for p in parts if p is not None]
    if not found:
        return [(0, 0)] * bands
    a = np.asarray(found, dtype=np.int64)  # blocks x bands x 2
    return [(int(lo), int(hi)) for lo, hi in zip(a[:, :, 0].min(axis=0), a[:, :, 1].max(axis=0))]


def coded_ranges(ranges: Sequence[tuple[int, int]], bits: int,
                 mask_bands: Sequence[bool] = ()) -> list[list[int]] | None:
    """The ranges a store codes with: a band whose values span less than :data:`STRETCH_BELOW`
    of ``0 .. 2**bits - 1`` keeps its own range (widened to at least one step for a constant
    band), the others the whole depth; None where no band is stretched (the strings then stay
    in the format that maps by ``bits``, byte for byte as without ranges).

    Why not every band: a stretch of a few percent changes what the model sees without a
    measurable gain (+3 % / -4 % bits at equal PSNR on two 8-bit scenes whose bands span 92-97 %
    of their depth), while 16-bit bands spanning 35-80 % gain 30-55 % (``catalogs/value_range.md``).

    An alpha band that is a pure mask (``mask_bands``; a decoder rebuilds it from the stored
    masks) keeps the whole depth too: ordinary RGBA imagery stays in the format it had.

    Args:
        ranges: per band ``(lo, hi)`` of the valid values.
        bits: the bit depth coded at.
        mask_bands: per band, whether it is an alpha band that is a pure mask (may be empty).

    Returns:
        ``[[lo, hi], ...]`` (JSON-ready), or None.
    """
    top = (1 << int(bits)) - 1
    out = []
    for b, (lo, hi) in enumerate(ranges):
        lo, hi = max(0, int(lo)), min(top, int(hi))
        if hi - lo >= STRETCH_BELOW * top or (b < len(mask_bands) and mask_bands[b]):
            lo, hi = 0, top
        elif hi <= lo:  # a constant band: one step wide, inside the bit depth
            lo, hi = (lo, lo + 1) if lo < top else (top - 1, top)
        out.append([lo, hi])
    return None if all(r == [0, top] for r in out) else out


def clip_ranges(ranges: Sequence[Sequence[int]] | None, bits: int, bands: int) -> list:
    """What the encoder's input is brought within (:func:`within_range`): the store's ranges,
    or the whole bit depth for a store without them.

    Args:
        ranges: the store's value ranges, or None.
        bits: the bit depth coded at.
        bands: the scene's bands.

    Returns:
        Per band ``(lo, hi)``.
    """
    return list(ranges) if ranges else [(0, (1 << int(bits)) - 1)] * int(bands)


def within_range(ctx: np.ndarray, tile: np.ndarray, valid: np.ndarray,
                 ranges: Sequence[Sequence[int]], sides: tuple[int, int, int, int],
                 stride: int) -> np.ndarray:
    """The encoder's input with nodata fill (and halo context) brought within each band's range.

    The ranges come from valid pixels only, so a nodata fill (0, 65535) may lie outside them.
    Valid pixels of the tile itself are left as they are (one out of range is an error, never
    clipped), and what the encoder sees outside them never reaches a decoded valid pixel.

    Args:
        ctx: the tile with its halo context, ``C x H x W``.
        tile: the tile itself.
        valid: the tile's validity.
        ranges: per band ``(lo, hi)``.
        sides: context latent pixels present (top, bottom, left, right).
        stride: pixels per latent pixel.

    Returns:
        ``ctx`` (unchanged when already inside), or a clipped copy.
    """
    r = np.asarray(ranges, dtype=np.int64)
    lo, hi = r[:, 0, None, None], r[:, 1, None, None]
    if ctx.dtype.kind not in "ui" or not ((ctx < lo).any() or (ctx > hi).any()):
        return ctx
    out = np.clip(ctx, lo, hi).astype(ctx.dtype)
    y, x = sides[0] * stride, sides[2] * stride
    core = (slice(None), slice(y, y + tile.shape[-2]), slice(x, x + tile.shape[-1]))
    out[core] = np.where(valid[None], tile, out[core])
    return out
