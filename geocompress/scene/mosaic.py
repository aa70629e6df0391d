"""Back from the store to pixels: a block of tiles, a region, or the whole scene as a GeoTIFF.

Only the tiles a region touches are decoded. Pixels outside kept tiles come back as the source's
nodata (dropped border tiles, and masked pixels of kept tiles, whose masks the store keeps);
constant tiles come back as their exact value. Sources that marked validity with a mask or an
alpha band rather than a nodata value get an internal mask (and a rebuilt alpha band) instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window
from tqdm.auto import tqdm

from .. import interrupt
from ..geo import TileStatus
from ..store import StoreError, StoreIntegrityError, TileStore
from ._options import fold
from .cluster import ClusterChoice, as_completed, dask_client, runs_in_process
from .failures import disk_full_reported, gdal_stderr_quiet
from .halo import latent_sides, latent_window, store_edges
from .output import (OutputSpec, cast_pixels, check_band_count, check_creation_options, check_exact,
                     check_validity, publish, target_dtype, warn_clipped)

if TYPE_CHECKING:  # type names only: importing this module imports no torch (issue 38)
    from ..codec.choice import CodecChoice
    from .workers import CodecSpec

PathLike = str | Path


def store_spec(ts: TileStore, checkpoint: str | None = None, batch_size: int = 8,
               device: str | None = None, precision: str = "auto") -> CodecSpec:
    """The codec a store was written with, as the small value tasks carry (verified by digest when
    it is built).

    Args:
        ts: the open store.
        checkpoint: the weights file it was written with, if not shipped.
        batch_size: tiles per model batch.
        device: the device (None: each worker decides).
        precision: the transforms' mode (any mode decodes any store).

    Returns:
        The :class:`~.workers.CodecSpec`.
    """
    from ..shipped import shipped_index
    from .workers import CodecSpec

    cm = ts.codec
    cfg = cm.get("config", {})
    return CodecSpec(arch=cm["arch"], digest=cm["digest"], quality=cm["quality"],
                     checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
                     model_config=dict(cfg.get("model", {})),
                     precision=precision, batch_size=batch_size,
                     device=device, pretrained=cm["arch"] in shipped_index())


def decode_region(store: PathLike, window: tuple[int, int, int, int], spec: dict,
                  count_clamped: bool = False) -> tuple[np.ndarray, ...]:
    """Decode the pixel window ``(col_off, row_off, width, height)`` (inside the scene): the task
    of GeoTIFF export and of the lazy view alike. Only the tiles it touches are decoded (and,
    for a halo store, the ring around them). Alpha bands say exactly the stored validity
    (:func:`restore_alpha`).

    Args:
        store: the store's folder.
        window: the pixel window.
        spec: the codec, as :meth:`~.workers.CodecSpec.to_dict` gives it.
        count_clamped: also return, per band, how many valid values of an alpha band decoded
            as data were raised to 1.

    Returns:
        ``(pixels C x h x w, valid h x w)``: nodata (or 0) and False outside kept tiles; with
        ``count_clamped``, ``(pixels, valid, clamped per band)``.

    Raises:
        StoreIntegrityError: a tile marked written without bytes, or one whose header does not
            belong to this store, named by grid row and column.
        CodecError: a damaged tile string, named by grid row and column.
    """
    ts = TileStore.open(store, "r")
    grid, meta = ts.grid, ts.meta
    col_off, row_off, width, height = window
    rows, cols = grid.tiles_in_window(Window(col_off, row_off, width, height))
    count, dtype = int(meta["count"]), np.dtype(meta["dtype"])
    nodata = meta.get("nodata")
    fill = 0 if nodata is None else nodata
    out = np.full((count, height, width), fill, dtype=dtype)
    valid = np.zeros((height, width), dtype=bool)
    status = ts.status(rows, cols)
    if status.size == 0:
        return out, valid
    strings = ts.read_strings(rows, cols)
    valid_tiles = ts.read_valid(rows, cols)
    consts = ts.constants(rows, cols)
    todo = _written(store, status, strings, rows, cols)
    _check_headers(store, ts, strings, rows, cols, todo)
    decoded = {}
    halo = int(ts.codec_meta["config"].get("halo", 0))
    if todo:  # the decoder (the model, or its bundle) loads on the first region with tiles to decode
        from .workers import CodecSpec, get_decoder

        codec = get_decoder(CodecSpec(**spec))
        if halo:
            decoded = _decode_with_halo(ts, codec, rows, cols, todo, halo)
        else:
            decoded = _decode_tiles(store, codec, strings, rows, cols, todo)
    t = grid.tile
    for (i, j), s in np.ndenumerate(status):
        r, c = rows.start + i, cols.start + j
        y0, x0 = r * grid.step, c * grid.step
        # overlap of this tile with the requested window, in window and tile coordinates
        wy0, wx0 = max(y0, row_off), max(x0, col_off)
        wy1, wx1 = min(y0 + t, row_off + height, grid.height), min(x0 + t, col_off + width, grid.width)
        if wy1 <= wy0 or wx1 <= wx0:
            continue
        dst = (slice(wy0 - row_off, wy1 - row_off), slice(wx0 - col_off, wx1 - col_off))
        src = (slice(wy0 - y0, wy1 - y0), slice(wx0 - x0, wx1 - x0))
        if s == TileStatus.WRITTEN:
            m = valid_tiles[i, j][src]
            px = decoded[(i, j)][(slice(None), *src)]
            if nodata is not None:
                px = nudge_off_nodata(px, m, nodata)
            out[(slice(None), *dst)] = np.where(m, px, out[(slice(None), *dst)])
            valid[dst] = m
        elif s == TileStatus.DROPPED_CONSTANT:
            m = valid_tiles[i, j][src]
            px = np.broadcast_to(consts[i, j].astype(dtype)[:, None, None], (count, *m.shape))
            if nodata is not None:  # a constant equal to nodata, valid by the source's mask
                px = nudge_off_nodata(px, m, nodata)
            out[(slice(None), *dst)] = np.where(m, px, out[(slice(None), *dst)])
            valid[dst] = m
    # opaque is the top of the scene's bit depth (4095 in 12-bit data), not of its dtype
    bits = ts.codec_meta["config"].get("bits")
    peak = (1 << int(bits)) - 1 if bits else np.iinfo(dtype).max
    clamped = restore_alpha(out, valid, meta, peak, store)
    return (out, valid, clamped) if count_clamped else (out, valid)


def restore_alpha(out: np.ndarray, valid: np.ndarray, meta: dict, peak: int,
                  store: PathLike = "") -> np.ndarray:
    """Make every alpha band of decoded pixels say exactly the stored validity, in place.

    An alpha band the store records as a pure mask (``alpha_is_mask``: only 0 and opaque in the
    source), or any alpha band of a store written before that record, is rebuilt from the mask:
    ``peak`` where valid, 0 elsewhere, exact. Any other alpha band (partial transparency, or a
    data band such as NIR marked alpha) keeps its decoded values, raised to 1 where valid and
    decoded as 0, and 0 where invalid: a reader taking validity from the alpha band sees the
    stored mask.

    Args:
        out: decoded pixels, C x H x W (changed in place).
        valid: the stored validity, H x W.
        meta: the store's scene metadata.
        peak: the opaque value.
        store: the store, for the error message.

    Returns:
        Per band, how many valid values were raised to 1 (the caller warns).

    Raises:
        StoreIntegrityError: ``alpha_is_mask`` does not have one flag per band.
    """
    interp = [str(ci).lower() for ci in meta.get("colorinterp", [])]
    is_mask = meta.get("alpha_is_mask")
    if is_mask is not None and len(is_mask) != len(interp):
        raise StoreIntegrityError(f"{store}: 'alpha_is_mask' has {len(is_mask)} flags for "
                                  f"{len(interp)} bands; re-create the store from its source")
    clamped = np.zeros(len(out), np.int64)
    for k, ci in enumerate(interp):
        if ci != "alpha":
            continue
        if is_mask is None or is_mask[k]:  # the mask itself: rebuilt exactly, not lossy-coded
            out[k] = np.where(valid, peak, 0).astype(out.dtype)
            continue
        clamped[k] = int((valid & (out[k] == 0)).sum())
        out[k] = np.where(valid, np.maximum(out[k], 1), 0).astype(out.dtype)
    return clamped


def _decode_tiles(store: PathLike, codec, strings: np.ndarray, rows: slice, cols: slice,
                  todo: list[tuple[int, int]]) -> dict[tuple[int, int], np.ndarray]:
    """``todo``'s tiles decoded in one batch; a string the codec refuses is named by its grid
    row and column (the codec numbers tiles by their place in the batch), found by decoding the
    batch's strings one at a time, on this error path only."""
    from ..codec.errors import CodecError

    batch = [bytes(strings[i, j]) for i, j in todo]
    try:
        return dict(zip(todo, codec.decode(batch)))
    except CodecError as e:
        raise _tile_named(store, lambda s: codec.decode([s]), batch, todo, rows, cols, e) from e


def _tile_named(store: PathLike, one: Callable[[bytes], Any], batch: list[bytes],
                where: list[tuple[int, int]], rows: slice, cols: slice, e: Exception) -> Exception:
    """The codec's error ``e`` about a batch, as an error naming the tile by its grid row and
    column: the culprit is found by running ``one`` on the batch's strings one at a time (this
    error path only). ``where`` holds the batch's indices relative to ``rows`` / ``cols``."""
    from ..codec.errors import CodecError

    culprit, error = where[0], e
    if len(where) > 1:
        for ij, s in zip(where, batch):
            try:
                one(s)
            except CodecError as single:
                culprit, error = ij, single
                break
    what = re.sub(r"^tile \d+:? ?", "", str(error))
    return type(error)(f"{store}: tile ({rows.start + culprit[0]}, {cols.start + culprit[1]}) "
                       f"(grid row, column): {what}")


def _written(store: PathLike, status: np.ndarray, strings: np.ndarray, rows: slice,
             cols: slice) -> list[tuple[int, int]]:
    """Indices of the WRITTEN tiles of a block; one whose bytes are missing is an error."""
    todo = [(i, j) for (i, j), s in np.ndenumerate(status) if s == TileStatus.WRITTEN]
    for i, j in todo:
        if not len(strings[i, j]):
            raise StoreIntegrityError(f"{store}: tile ({rows.start + i}, {cols.start + j}) is marked "
                                      f"written but its bytes are missing (a deleted or damaged "
                                      f"'tiles' shard)")
    return todo


def _check_headers(store: PathLike, ts: TileStore, strings: np.ndarray, rows: slice, cols: slice,
                   todo: list[tuple[int, int]]) -> None:
    """Each string's header against the store it sits in: a string moved in from another store
    (right weights, valid checksum) must not be decoded into this one's bands, dtype or grid."""
    from ..codec.errors import CodecError
    from ..codec.format import read_header

    meta, cfg = ts.meta, ts.codec_meta["config"]
    want = {"bands": int(meta["count"]), "dtype": np.dtype(meta["dtype"]).name,
            "size": (ts.grid.tile, ts.grid.tile), "halo": int(cfg.get("halo", 0))}
    if cfg.get("bits") is not None:
        want["bits"] = int(cfg["bits"])
    # the store's value ranges (or none): a tile coded with other ranges maps to other values
    want["value range"] = (tuple(tuple(int(v) for v in r) for r in cfg["value_range"])
                           if cfg.get("value_range") else None)
    if meta.get("tile_format_version") is not None:  # stores since it exists bind the version:
        # versions 1 and 2 share a layout, so an edited version byte (CRC recomputed) would
        # decode the symbols in the other order, into other pixels
        want["format version"] = int(meta["tile_format_version"])
    for i, j in todo:
        where = f"{store}: tile ({rows.start + i}, {cols.start + j})"
        try:
            h, _ = read_header(bytes(strings[i, j]))
        except CodecError as e:
            raise StoreIntegrityError(f"{where}: {e}") from None
        got = {"bands": h.channels, "dtype": np.dtype(h.dtype).name, "size": (h.height, h.width),
               "halo": h.halo, "bits": h.bits, "format version": h.version,
               "value range": h.ranges}
        bad = [f"{k} {got[k]} (store: {v})" for k, v in want.items() if got[k] != v]
        if bad:
            raise StoreIntegrityError(f"{where} was not written for this store: its header has "
                                      f"{', '.join(bad)} (a tile copied from another store?)")


def _decode_with_halo(ts: TileStore, codec, rows: slice, cols: slice, todo: list[tuple[int, int]],
                      halo: int) -> dict[tuple[int, int], np.ndarray]:
    """Tiles ``todo`` (indices relative to ``rows`` / ``cols``) synthesized from their latents
    plus ``halo`` latent pixels of their neighbours': the ring of tiles around the region is
    entropy-decoded too. Where a neighbour has no latent the window ends (or, in stores written
    before that rule, is the edge replication of the tile's own latent): see
    :mod:`geocompress.scene.halo`. Each tile's pixels depend only on its 3 x 3 neighbourhood of
    strings, so a region decodes to the crop of the full scene's decode."""
    grid = ts.grid
    truncate = store_edges(ts.codec_meta["config"]) == "truncate"
    rr = slice(max(0, rows.start - 1), min(grid.n_rows, rows.stop + 1))
    cc = slice(max(0, cols.start - 1), min(grid.n_cols, cols.stop + 1))
    status, strings = ts.status(rr, cc), ts.read_strings(rr, cc)
    written = _written(ts.path, status, strings, rr, cc)
    _check_headers(ts.path, ts, strings, rr, cc, written)  # the ring around the region too
    from ..codec.errors import CodecError

    batch = [bytes(strings[i, j]) for i, j in written]
    try:  # the ring around the region too: a damaged neighbour is named by its grid cell
        headers, latents = codec.decode_latents(batch)
    except CodecError as e:
        raise _tile_named(ts.path, lambda s: codec.decode_latents([s]), batch, written, rr, cc,
                          e) from e
    latent = dict(zip(written, latents))
    head = dict(zip(written, headers))
    k = int(halo)
    windows, todo_headers, sides = [], [], []
    for i, j in todo:
        ri, rj = i + rows.start - rr.start, j + cols.start - cc.start
        own0 = latent[(ri, rj)][0]
        has = {key: key in latent and latent[key][0].shape == own0.shape
               for key in ((ri + di, rj + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1))}
        sd = latent_sides(has, ri, rj, k) if truncate else (k, k, k, k)
        windows.append([latent_window({key: latent[key][g] for key in has if has[key]}, ri, rj, k, sd)
                        for g in range(len(latent[(ri, rj)]))])
        sides.append(sd)
        todo_headers.append(head[(ri, rj)])
    pixels = codec.synthesize(todo_headers, windows, k, sides=sides)
    return dict(zip(todo, pixels))


def select_bands(meta: dict, picks: list[int]) -> dict:
    """The per-band metadata of ``picks`` only (``-b``).

    Args:
        meta: the store's scene metadata.
        picks: the bands kept, 1-based, in output order.

    Returns:
        A copy of ``meta`` with its per-band lists cut to ``picks``.
    """
    out = dict(meta)
    for key in ("band_names", "descriptions", "band_tags", "band_tag_domains", "colorinterp",
                "scales", "offsets", "units"):
        values = meta.get(key) or []
        if len(values) == int(meta["count"]):
            out[key] = [values[b - 1] for b in picks]
    return out


def describe_bands(dst, meta: dict) -> None:
    """What the source said its bands mean, on the rebuilt raster: descriptions, colour
    interpretation (only a band the source marked alpha is alpha: a 4-band R, G, B, NIR scene
    must not come back as RGBA), scales / offsets / units, band-level tags (in every metadata
    domain), and the dataset tags in every metadata domain.

    Args:
        dst: the raster being written (open for writing).
        meta: the store's scene metadata (cut to the bands written, :func:`select_bands`).
    """
    from rasterio.enums import ColorInterp

    # the source's own descriptions (empty stays empty); stores before them: the band names
    names = meta["descriptions"] if "descriptions" in meta else (meta.get("band_names") or [])
    for k, name in enumerate(names[: dst.count], 1):
        if name:
            dst.set_band_description(k, str(name))
    band_tags = meta.get("band_tags") or []
    if len(band_tags) == dst.count:
        for k, tags in enumerate(band_tags, 1):
            if tags:
                dst.update_tags(k, **tags)
    band_domains = meta.get("band_tag_domains") or []
    if len(band_domains) == dst.count:
        for k, domains in enumerate(band_domains, 1):
            for ns, tags in domains.items():
                dst.update_tags(k, ns=ns, **tags)
    for ns, tags in (meta.get("tag_domains") or {}).items():
        dst.update_tags(ns=ns, **tags)
    interp = meta.get("colorinterp") or []
    if len(interp) == dst.count:
        dst.colorinterp = [ColorInterp[str(c)] if str(c) in ColorInterp.__members__
                           else ColorInterp.undefined for c in interp]
    if len(meta.get("scales") or []) == dst.count:
        dst.scales = meta["scales"]
    if len(meta.get("offsets") or []) == dst.count:
        dst.offsets = meta["offsets"]
    if len(meta.get("units") or []) == dst.count:
        dst.units = meta["units"]
    if meta.get("tags"):
        dst.update_tags(**meta["tags"])


def nudge_off_nodata(px: np.ndarray, valid: np.ndarray, nodata: float) -> np.ndarray:
    """Band values of valid pixels that decode to the nodata value, moved one level off it: in a
    GeoTIFF with a nodata value they would otherwise read back as nodata, in every band (the
    dataset mask) or in that band alone (GDAL's per-band masks: ``read(masked=True)``,
    rioxarray's masking). Validity comes from the stored mask, never from a decoded value
    (LAYOUT.md).

    Args:
        px: decoded pixels, C x H x W.
        valid: the stored validity, H x W.
        nodata: the scene's nodata value.

    Returns:
        ``px``, or a copy with those pixels moved.
    """
    hit = valid[None] & (px == nodata)
    if not hit.any():
        return px
    px = np.array(px)
    top = np.iinfo(px.dtype).max if px.dtype.kind in "ui" else np.inf
    px[hit] = nodata + 1 if nodata < top else nodata - 1
    return px


def _region_window(ts: TileStore, window: Sequence[int] | None, bbox: Sequence[float] | None,
                   bbox_crs: Any) -> Window:
    g = ts.grid
    if bbox is not None:
        return g.bbox_to_window(tuple(bbox), bbox_crs)
    if window is None:
        return Window(0, 0, g.width, g.height)
    col_off, row_off, width, height = (int(v) for v in window)
    full = Window(0, 0, g.width, g.height)
    win = Window(col_off, row_off, width, height)
    try:
        cut = win.intersection(full)
    except rasterio.errors.WindowError:
        raise ValueError(f"window {tuple(window)} lies outside the {g.width} x {g.height} scene") from None
    if (int(cut.col_off), int(cut.row_off), int(cut.width), int(cut.height)) != (
            col_off, row_off, width, height):
        warnings.warn(f"window {tuple(window)} reaches beyond the {g.width} x {g.height} scene: "
                      f"cut to {int(cut.col_off)} {int(cut.row_off)} {int(cut.width)} "
                      f"{int(cut.height)} (COL_OFF ROW_OFF WIDTH HEIGHT)", stacklevel=4)
    return cut


def _blocks(win: Window, step_x: int, step_y: int) -> list[tuple[int, int, int, int]]:
    """Cut a window into pieces aligned to a ``step_x`` x ``step_y`` pixel grid (whole tiles)."""
    c0, r0 = int(win.col_off), int(win.row_off)
    c1, r1 = c0 + int(win.width), r0 + int(win.height)
    out = []
    for y in range(r0 - r0 % step_y, r1, step_y):
        for x in range(c0 - c0 % step_x, c1, step_x):
            ya, xa = max(y, r0), max(x, c0)
            out.append((xa, ya, min(x + step_x, c1) - xa, min(y + step_y, r1) - ya))
    return out


@dataclass(frozen=True)
class Region:
    """The part of a store to decode: the whole scene, a pixel window or a bounding box.

    Args:
        window: ``(col_off, row_off, width, height)`` in scene pixels; one reaching beyond the
            scene is cut to it, with a warning.
        bbox: ``(minx, miny, maxx, maxy)`` in ``bbox_crs``; takes precedence over ``window``.
        bbox_crs: the CRS of ``bbox`` in any form rasterio or pyproj reads (default the scene's).
        allow_incomplete: decode a store whose compress run did not finish: its missing tiles
            come back masked as nodata (without it such a store is refused).

    Examples:
        >>> from geocompress.scene.mosaic import Region
        >>> Region(window=(0, 0, 256, 256)).replace(allow_incomplete=True).allow_incomplete
        True
    """

    window: Sequence[int] | None = None
    bbox: Sequence[float] | None = None
    bbox_crs: Any = None
    allow_incomplete: bool = False

    def replace(self, **changes: Any) -> "Region":
        """This region with some fields changed (the dataclass is frozen).

        Args:
            **changes: field values.

        Returns:
            A new region.
        """
        return replace(self, **changes)


# decompress_scene's flat keywords that may set a field of its codec or cluster choice
DECODE_CODEC_OPTIONS = ("checkpoint", "batch_size", "precision")
DECODE_CLUSTER_OPTIONS = ("scheduler", "workers", "processes", "progress", "tiles_per_task",
                          "in_process")


@dataclass
class _Decode:
    """A decompress run's settled inputs, shared by its parts."""

    store: PathLike
    out: Path
    ts: TileStore
    output: OutputSpec
    picks: list[int]
    win: Window
    spec: CodecSpec
    cluster: ClusterChoice
    local: bool = False
    profile: dict = field(default_factory=dict)
    dtype: np.dtype | None = None
    use_mask: bool = False


def decompress_scene(store: PathLike, out: PathLike, region: Region | None = None, *,
                     output: OutputSpec | None = None, codec: CodecChoice | None = None,
                     cluster: ClusterChoice | None = None, overwrite: bool = False,
                     **options: Any) -> Path:
    """Write the scene, or a region of it, as ``output`` says; the file appears atomically.

    Only the tiles the region touches are decoded, each task a run of
    ``cluster.tiles_per_task`` tiles of one tile row. The default output, a cloud-optimized
    GeoTIFF with lossless DEFLATE and a predictor, stores the decoded pixels exactly, and so is
    larger than the source when that was lossily compressed.

    Args:
        store: a store written by :func:`~geocompress.scene.compress_scene`.
        out: the output file; its extension picks the format unless ``output.driver`` names one.
        region: the window or bbox to decode, and whether an incomplete store may be (default:
            the whole scene of a complete store).
        output: driver, bands, dtype, overviews, creation options (default
            :class:`~.output.OutputSpec`: a COG with overviews).
        codec: only its ``checkpoint`` (the weights the store was written with, if not shipped),
            ``precision`` (any mode decodes any store) and ``batch_size`` are used: the store
            names its codec (default 8 tiles per batch).
        cluster: where the tasks run (default: in this process when the region touches at most
            :data:`~geocompress.scene.cluster.SMALL_JOB_TILES` tiles and neither a scheduler nor
            workers are given; same tasks, same pixels), tiles per task and progress.
        overwrite: replace an existing output file.
        **options: single fields by name: of ``region``, and ``checkpoint``, ``batch_size``,
            ``precision`` of ``codec``, ``scheduler``, ``workers``, ``processes``, ``progress``,
            ``tiles_per_task``, ``in_process`` of ``cluster``.

    Returns:
        The output's path.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is not set.
        FileNotFoundError: ``out``'s folder does not exist (checked before any decoding).
        StoreError: an incomplete store without ``region.allow_incomplete``.
        StoreIntegrityError: damaged bookkeeping or tiles, named by array or grid cell.
        ValueError: bands out of range, or an output that would lose validity or pixels
            (a driver, data type or creation option that cannot hold them).
        WeightsMismatchError: the weights found differ from the store's.

    Examples:
        >>> import tempfile, numpy as np, rasterio
        >>> from rasterio.transform import from_origin
        >>> from geocompress.scene import OutputSpec, Region, compress_scene, decompress_scene
        >>> folder, rng = tempfile.mkdtemp(), np.random.default_rng(0)
        >>> with rasterio.open(f"{folder}/scene.tif", "w", driver="GTiff", width=128, height=64,
        ...                    count=1, dtype="uint8", crs="EPSG:32633",
        ...                    transform=from_origin(500000, 4100000, 10, 10)) as dst:
        ...     dst.write(rng.integers(0, 255, (1, 64, 128), dtype=np.uint8))
        >>> _ = compress_scene(f"{folder}/scene.tif", f"{folder}/scene.zarr", tile=64,
        ...                    pretrained=False, model_config={"N": 16, "M": 24}, progress=False)
        >>> out = decompress_scene(f"{folder}/scene.zarr", f"{folder}/left.tif",
        ...                        Region(window=(0, 0, 64, 64)), output=OutputSpec(cog=False),
        ...                        progress=False)
        >>> with rasterio.open(out) as src:
        ...     src.shape, src.crs.to_epsg(), src.transform.c
        ((64, 64), 32633, 500000.0)
    """
    from ..codec.choice import CodecChoice

    region, codec, cluster = fold(
        "decompress_scene", options, region or Region(), codec or CodecChoice(batch_size=8),
        cluster or ClusterChoice(), limit={CodecChoice: DECODE_CODEC_OPTIONS,
                                           ClusterChoice: DECODE_CLUSTER_OPTIONS})
    job = _open_checked(store, Path(out), region, output or OutputSpec(), codec, cluster,
                        overwrite)
    _describe_output(job)
    _write_output(job)
    return job.out


def _open_checked(store: PathLike, out: Path, region: Region, output: OutputSpec,
                  codec: CodecChoice, cluster: ClusterChoice, overwrite: bool) -> _Decode:
    """The store opened and verified, and everything refused that can be before decoding:
    output path, format, bands, an incomplete store, wrong weights."""
    output = output.resolve(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if not out.parent.is_dir():  # before any decoding, not after it
        raise FileNotFoundError(f"output folder {out.parent} does not exist")
    picks = None if output.bands is None else [int(b) for b in output.bands]
    ts = TileStore.open(store, "r")
    ts.verify()  # damaged bookkeeping is an error naming the array, never pixels
    n_bands = int(ts.meta["count"])
    picks = list(range(1, n_bands + 1)) if picks is None else picks
    if not picks or any(not 1 <= b <= n_bands for b in picks):
        raise ValueError(f"bands {picks} out of range: the store has bands 1..{n_bands}")
    check_band_count(output, len(picks), ts.meta["dtype"])  # before decoding, not at the end
    if not ts.is_complete:
        pending = ts.status_counts()["PENDING"]
        if not region.allow_incomplete:
            raise StoreError(f"{store} is incomplete ({pending} tiles never written: the compress "
                             f"run was interrupted); rerun the same compress command to finish it, "
                             f"or pass allow_incomplete / --allow-incomplete to decode what is there "
                             f"(missing tiles come back masked)")
        warnings.warn(f"{store} is incomplete ({pending} tiles pending): they come back masked "
                      f"as nodata", stacklevel=3)
    spec = store_spec(ts, codec.checkpoint, codec.batch_size, precision=codec.precision)
    win = _region_window(ts, region.window, region.bbox, region.bbox_crs)
    rows, cols = ts.grid.tiles_in_window(win)
    local = runs_in_process((rows.stop - rows.start) * (cols.stop - cols.start), cluster.scheduler,
                            cluster.workers, in_process=cluster.in_process)
    from .workers import CodecSpec, build_codec, get_decoder

    # fail early on wrong weights; in this process the decoder built is the one the tasks use
    (get_decoder if local else build_codec)(CodecSpec(**{**spec.to_dict(), "device": "cpu"}))
    return _Decode(store, out, ts, output, picks, win, spec, cluster, local)


def _describe_output(job: _Decode) -> None:
    """The output's GeoTIFF profile, data type and mask, checked against the output spec."""
    ts, win, picks, output = job.ts, job.win, job.picks, job.output
    meta, grid = ts.meta, ts.grid
    transform = grid.transform @ Affine.translation(int(win.col_off), int(win.row_off))
    nodata = meta.get("nodata")
    # pending tiles of an incomplete store are invalid: without a nodata value they need a mask
    job.use_mask = nodata is None and (bool(meta.get("has_mask")) or not ts.is_complete)
    check_validity(output, nodata, job.use_mask)
    job.dtype = target_dtype(output, meta["dtype"], nodata)
    check_exact(output, job.dtype, nodata, job.use_mask,
                select_bands(meta, picks).get("colorinterp") or ["undefined"] * len(picks))
    check_creation_options(output, len(picks), job.dtype)  # GDAL would only warn and ignore them
    job.profile = {"driver": "GTiff", "width": int(win.width), "height": int(win.height),
                   "count": len(picks), "dtype": job.dtype.name, "crs": grid.crs,
                   "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "compress": "deflate", "predictor": 2, "BIGTIFF": "IF_SAFER"}


def _pieces(job: _Decode) -> list[tuple[int, int, int, int]]:
    """The region cut into the windows one decode task each handles."""
    grid = job.ts.grid
    if int(job.ts.codec_meta["config"].get("halo", 0)):
        # each piece also entropy-decodes the ring of tiles around it: squarer pieces waste less
        return _blocks(job.win, grid.tile * 4, grid.tile * 2)
    return _blocks(job.win, grid.tile * max(1, int(job.cluster.tiles_per_task)), grid.tile)


def _write_output(job: _Decode) -> None:
    """Decode into a hidden temporary GeoTIFF beside the output, then publish it in the
    output's format; an interrupted or failed run publishes nothing."""
    out = job.out
    # temporaries are hidden, named after the output, and a rerun sweeps those a killed run left
    for stale in out.parent.glob(f".{out.name}.*.partial*"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    full = {"path": out, "what": "writing the output", "where": out.parent,
            "advice": f"nothing was published as {out.name}; free some space and rerun"}
    with disk_full_reported(**full):
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial.tif", dir=out.parent)
        os.close(fd)
    try:
        # a full disk is recognised before the temporary is removed (it may be what filled it)
        with disk_full_reported(**full), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            with gdal_stderr_quiet():
                dst = rasterio.open(tmp, "w", **job.profile)
            try:
                describe_bands(dst, select_bands(job.ts.meta, job.picks))
                clipped = _decode_into(job, dst)
            except BaseException:
                with contextlib.suppress(Exception), gdal_stderr_quiet():
                    dst.close()
                raise
            with gdal_stderr_quiet():
                dst.close()  # GDAL flushes its cached blocks here
            warn_clipped(clipped, job.dtype)
            interrupt.check()  # an interrupted run publishes nothing
            with gdal_stderr_quiet():
                publish(Path(tmp), out, job.output)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _decode_into(job: _Decode, dst) -> int:
    """Run the decode tasks and write each piece into ``dst`` as it arrives; returns the number
    of pixels clipped to the output's data type."""
    store, win, cluster, picks = job.store, job.win, job.cluster, job.picks
    nodata, pieces, clipped = job.ts.meta.get("nodata"), _pieces(job), 0
    alpha_raised = np.zeros(int(job.ts.meta["count"]), np.int64)
    with dask_client(cluster.scheduler, cluster.workers, cluster.processes,
                     in_process=job.local) as client:
        futures = {client.submit(decode_region, str(store), p, job.spec.to_dict(),
                                 count_clamped=True, pure=False): p for p in pieces}
        bar = tqdm(total=sum(p[2] * p[3] for p in pieces) / 1e6, unit="Mpx",
                   disable=not cluster.progress, desc=f"decompress {Path(store).name}",
                   bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} Mpx [{elapsed}<{remaining}]")
        for fut in as_completed(list(futures)):
            p = futures[fut]
            pixels, valid, raised = fut.result()
            alpha_raised += raised
            w = Window(p[0] - int(win.col_off), p[1] - int(win.row_off), p[2], p[3])
            px, n = cast_pixels(pixels[[b - 1 for b in picks]], job.dtype, valid)
            clipped += n
            if nodata is not None:  # the bands kept, as written, must not read as nodata
                px = nudge_off_nodata(px, valid, nodata)
            with gdal_stderr_quiet():  # libtiff prints a full disk on fd 2
                dst.write(px, window=w)
                if job.use_mask:
                    dst.write_mask(np.where(valid, 255, 0).astype(np.uint8), window=w)
            bar.update(p[2] * p[3] / 1e6)
        bar.close()
    _warn_alpha_raised(alpha_raised[[b - 1 for b in picks]])
    return clipped


def _warn_alpha_raised(raised: np.ndarray) -> None:
    """Say how many valid values of the written alpha bands that decode as data (not a pure
    0 / opaque mask in the source) came back as 0 and were raised to 1 (:func:`restore_alpha`)."""
    if not raised.any():
        return
    bands = ", ".join(str(k + 1) for k in np.nonzero(raised)[0])
    warnings.warn(f"{int(raised.sum())} valid pixel(s) of the output's alpha band(s) {bands} "
                  f"decoded as 0 (transparent) and were raised to 1, so that the alpha band says "
                  f"the stored validity mask (the source's alpha is not a pure 0 / opaque mask, "
                  f"so it is decoded as data, lossily)", stacklevel=5)


__all__ = ["Region", "decode_region", "decompress_scene", "store_spec"]
