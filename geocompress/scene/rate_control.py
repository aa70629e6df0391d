"""Rate control: the level of a variable-rate model that codes a scene at a target bpp or PSNR.

As JPEG 2000 lets its users ask for a rate or a quality, a variable-rate codec
(:mod:`geocompress.models.variable_rate`) can be given a target instead of a level. The level is
found by a search through the real codec (real strings, every byte counted) on a sample of the
scene's valid tiles, read in the calling process before any store is written:

* **sample**: up to ``sample`` tiles that the scene pipeline would code (the tile filter's
  verdict), spread evenly over the grid; the fraction of probed grid cells that hold such a tile
  estimates how much of the scene is coded at all (black borders and nodata cost no bits);
* **bpp** of the scene = tile bytes over the scene's pixels, estimated as the sample's bytes per
  coded tile times the estimated number of coded tiles, over ``width x height``;
* **PSNR** over the sample's valid pixels (one pooled MSE), with the peak of the scene's bit
  depth (``2**bits - 1``: 255 for 8-bit data, 4095 for 12-bit data in uint16);
* **search**: bisection on the level, which both figures increase with; a target the model
  cannot reach on this scene (below level 0's or above the top level's figure) is an error that
  names the range it can reach.

What was asked and what the sample gave are recorded in the store and its STAC item
(``rate_control``); the achieved bpp of the whole scene is known once it is coded and reported
then (:class:`~geocompress.scene.compress.CompressResult`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..geo import SceneReader, TileFilter, TileGrid, TileStatus
from ..geo.source import SceneInfo

MAX_ITERATIONS = 16
BPP_TOLERANCE = 0.01     # relative
PSNR_TOLERANCE = 0.02    # dB
LEVEL_RESOLUTION = 0.001  # the tile header's: levels travel in thousandths


class RateTargetError(ValueError):
    """A target that is not a positive number, or that the model cannot reach on this scene."""


@dataclass(frozen=True)
class RateTarget:
    """What a user asks for: a bpp or a PSNR (exactly one), and how many tiles to measure it on.

    Args:
        bpp: target bits per pixel of the scene (tile bytes over the scene's pixels).
        psnr: target PSNR in dB over valid pixels, peak ``2**bits - 1``.
        sample: tiles the search codes at each step (more: closer to the scene, slower).

    Raises:
        RateTargetError: neither or both given, or a value that is not a finite positive number.
    """

    bpp: float | None = None
    psnr: float | None = None
    sample: int = 32

    def __post_init__(self) -> None:
        if (self.bpp is None) == (self.psnr is None):
            raise RateTargetError("give exactly one rate target: a bpp or a PSNR")
        for name in ("bpp", "psnr"):
            v = getattr(self, name)
            if v is None:
                continue
            if (isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real)
                    or not math.isfinite(v) or v <= 0):
                raise RateTargetError(f"target {name} must be a finite number > 0, got {v!r}")
            object.__setattr__(self, name, float(v))  # numpy scalars too; recorded as JSON
        if (isinstance(self.sample, (bool, np.bool_)) or not isinstance(self.sample, numbers.Integral)
                or self.sample < 1):
            raise RateTargetError(f"sample must be a whole number >= 1, got {self.sample!r}")
        object.__setattr__(self, "sample", int(self.sample))

    @property
    def kind(self) -> str:
        """Which figure the target names.

        Returns:
            ``"bpp"`` or ``"psnr"``.
        """
        return "bpp" if self.bpp is not None else "psnr"

    @property
    def value(self) -> float:
        """The target's figure.

        Returns:
            The bpp or the PSNR in dB asked for.
        """
        return float(self.bpp if self.bpp is not None else self.psnr)


@dataclass(frozen=True)
class RateChoice:
    """The level the search chose and what the sample measured there (recorded in the store)."""

    target: str               # "bpp" or "psnr"
    value: float              # the target asked for
    level: float              # the level chosen (a multiple of the header's resolution)
    estimated_bpp: float      # of the whole scene, from the sample
    sample_psnr: float        # dB over the sample's valid pixels
    sample_tiles: int
    coded_fraction: float     # of the grid's cells, estimated from the probed ones
    iterations: int
    reachable: tuple[float, float]  # the target's figure at the lowest and the highest level

    def to_dict(self) -> dict[str, Any]:
        """The choice as JSON-ready data (as recorded in the store's codec config).

        Returns:
            Its fields by name, tuples as lists.
        """
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class HaloContext:
    """What the pipeline's encoder sees around each sample tile when the scene is coded with a
    halo: a halo-coded tile costs other bytes than the same tile coded alone (its edge latents
    are interior ones, coded with the halo prior), so the search codes the sample that way too.

    Args:
        halo: latent pixels of neighbour context.
        pixels: per sample tile, the tile with its neighbours' pixels (``sides`` of them).
        sides: per sample tile, latent pixels of context present (top, bottom, left, right).
    """

    halo: int
    pixels: list
    sides: list


def sample_tiles(scene: SceneInfo, grid: TileGrid, tile_filter: TileFilter, n: int,
                 probes: int | None = None, halo: int = 0, stride: int = 16
                 ) -> tuple[list[np.ndarray], list[np.ndarray], float, HaloContext | None]:
    """Up to ``n`` tiles the pipeline would code, spread over the grid, their validity masks,
    the fraction of probed cells that hold such a tile, and (``halo`` > 0) their context.

    Args:
        scene: the source.
        grid: its tile grid.
        tile_filter: the pipeline's filter (nodata / constant tiles are not coded).
        n: tiles wanted.
        probes: grid cells read at most (default ``4 n``), evenly spaced in raster order.
        halo: latent pixels of neighbour context the scene is coded with (the store's edge rule:
            none beyond the grid, :func:`~geocompress.scene.halo.grid_sides`).
        stride: pixels per latent pixel of the codec.

    Returns:
        (tiles as C x H x W arrays, validity masks as H x W, coded fraction of the probed cells,
        the tiles' :class:`HaloContext` or None without a halo).
    """
    from .halo import grid_sides

    cells = [(r, c) for r in range(grid.n_rows) for c in range(grid.n_cols)]
    probes = min(len(cells), probes or 4 * n)
    order = np.unique(np.linspace(0, len(cells) - 1, probes).round().astype(int))
    tiles, masks, coded = [], [], 0
    context = HaloContext(halo, [], []) if halo else None
    with SceneReader(scene) as reader:
        for k in order:
            r, c = cells[int(k)]
            pixels, valid = reader.read_tile(grid, r, c)
            if tile_filter.decide(pixels, valid, grid.in_scene_pixels(r, c)).status != TileStatus.WRITTEN:
                continue
            coded += 1
            if len(tiles) < n:  # the whole tile, as the pipeline codes it; PSNR over the scene's
                win = grid.valid_window(r, c)  # valid pixels only
                inside = np.zeros_like(valid)
                inside[: int(win.height), : int(win.width)] = True
                tiles.append(pixels)
                masks.append(valid & inside)
                if context is not None:
                    sd = grid_sides(grid, r, c, halo)
                    context.sides.append(sd)
                    context.pixels.append(reader.read_context(grid, r, c, stride * halo,
                                                              tuple(stride * v for v in sd)))
    return tiles, masks, coded / max(len(order), 1), context


@dataclass(frozen=True)
class Extent:
    """How the sample's bytes scale to the scene's bpp.

    Args:
        coded_fraction: estimated fraction of the grid's cells that are coded.
        grid_cells: cells of the scene's tile grid.
        scene_pixels: ``width x height`` of the scene.
    """

    coded_fraction: float
    grid_cells: int
    scene_pixels: int

    @property
    def scale(self) -> float:
        """Scene bits per pixel of one byte per sample tile, over 8."""
        return self.coded_fraction * self.grid_cells / self.scene_pixels


def _measure(codec, tiles: list[np.ndarray], masks: list[np.ndarray], bits: int, level: float,
             scale: float, ranges=None, halo: HaloContext | None = None) -> tuple[float, float]:
    """(estimated scene bpp, sample PSNR) at ``level``; with a halo the tiles are coded as the
    pipeline codes them, and drawn as a halo decode draws them
    (:meth:`~geocompress.codec.tile_codec.TileCodec.encode_with_reconstruction`)."""
    codec.set_level(level)
    if halo is None:
        strings, recon = codec.encode_with_reconstruction(tiles, bits=bits, ranges=ranges)
    else:
        strings, recon = codec.encode_with_reconstruction(halo.pixels, bits=bits, ranges=ranges,
                                                          halo=halo.halo, sides=halo.sides)
    se, n = 0.0, 0
    for t, r, m in zip(tiles, recon, masks):
        d = (t.astype(np.float64) - r.astype(np.float64))[:, m]
        se += float((d ** 2).sum())
        n += d.size
    peak = float(2 ** bits - 1)
    mse = se / max(n, 1)
    psnr = math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)
    return sum(len(s) for s in strings) * 8 / len(tiles) * scale, psnr


def choose_level(codec, tiles: list[np.ndarray], masks: list[np.ndarray], bits: int,
                 target: RateTarget, extent: Extent, ranges: list | None = None,
                 halo: HaloContext | None = None) -> RateChoice:
    """The level at which ``codec`` meets ``target`` on the sample (see the module docstring).

    Args:
        codec: a variable-rate :class:`~geocompress.codec.tile_codec.TileCodec`; its level is
            left at the choice.
        tiles, masks: the sample (:func:`sample_tiles`).
        bits: the scene's bit depth.
        target: what was asked.
        extent: how the sample's bytes scale to the scene's bpp.
        ranges: the value ranges the scene is coded with (None: ``0 .. 2**bits - 1``).
        halo: the sample's context where the scene is coded with a halo (its bytes differ).

    Returns:
        The choice and what the sample measured there.

    Raises:
        RateTargetError: the model is fixed-rate, the sample is empty, or the target lies outside
            what the model reaches on this scene.
    """
    if not getattr(codec, "variable_rate", False):
        raise RateTargetError(f"{codec.arch} weights have one rate each: a rate target needs a "
                              f"variable-rate model (--arch mgssnet-vr)")
    if not tiles:
        raise RateTargetError("the scene has no tile to code: nothing to aim a rate at")
    scale, coded_fraction = extent.scale, extent.coded_fraction
    col = 0 if target.kind == "bpp" else 1
    lo, hi = 0.0, float(codec.model.levels - 1)
    f_lo = _measure(codec, tiles, masks, bits, lo, scale, ranges, halo)
    f_hi = _measure(codec, tiles, masks, bits, hi, scale, ranges, halo)
    reach = (round(f_lo[col], 4), round(f_hi[col], 4))
    unit = "bpp" if col == 0 else "dB"
    if not f_lo[col] <= target.value <= f_hi[col]:
        raise RateTargetError(f"target {target.value:g} {unit} is outside what this model reaches on "
                              f"this scene: {reach[0]:g} .. {reach[1]:g} {unit} (levels {lo:g}..{hi:g})")
    best = (lo, f_lo) if abs(f_lo[col] - target.value) <= abs(f_hi[col] - target.value) else (hi, f_hi)
    it = 2
    while it < MAX_ITERATIONS and hi - lo > LEVEL_RESOLUTION:
        mid = round((lo + hi) / 2 / LEVEL_RESOLUTION) * LEVEL_RESOLUTION
        f = _measure(codec, tiles, masks, bits, mid, scale, ranges, halo)
        it += 1
        if abs(f[col] - target.value) < abs(best[1][col] - target.value):
            best = (mid, f)
        err = f[col] - target.value
        if (col == 0 and abs(err) <= BPP_TOLERANCE * target.value) or \
                (col == 1 and abs(err) <= PSNR_TOLERANCE):
            break
        lo, hi = (mid, hi) if err < 0 else (lo, mid)
    level, (bpp, psnr) = best
    codec.set_level(level)
    return RateChoice(target.kind, target.value, float(codec.rate), round(bpp, 5), round(psnr, 3),
                      len(tiles), round(coded_fraction, 4), it, reach)
