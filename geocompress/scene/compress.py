"""Compress a scene of any size: small encode tasks, one write task per shard block of Zarr.

For every *pending* shard block of the store (16 x 16 tiles by default) the graph has a few encode
tasks (``tiles_per_task`` tiles each: read by window, drop nodata / constant tiles, encode the
rest) and one write task that takes their results and writes the block. A block is one file per
Zarr array, written by one task, its status last, so an interrupted run leaves a valid store
whose unfinished blocks are still PENDING; rerunning the same command does only those. Memory is
bounded by the encoded parts in flight (kilobytes per tile), whatever the scene size.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
from tqdm.auto import tqdm

from .. import interrupt
from ..codec import CodecChoice, load_codec
from ..geo import SceneReader, TileFilter, TileGrid, TileStatus, constant_value, open_scene
from ..geo.source import SceneInfo, alpha_masks
from ..store import TileStore
from ..store.stac import write_stac_item
from .failures import disk_full_reported
from .halo import grid_sides, resolve_halo, store_edges
from ._options import fold
from .cluster import ClusterChoice, as_completed, dask_client, default_torch_threads
from .rate_control import Extent, RateTarget, RateTargetError, choose_level, sample_tiles
from .value_range import (GDAL_CACHE_MB, VALUE_RANGES, clip_ranges, coded_ranges, merge_ranges,
                          scan_block_range, within_range)
from .workers import CodecSpec, adopt_codec, encode_mask, get_codec

PathLike = str | Path
MIN_TILE, MAX_TILE = 64, 4096  # the models' downsampling factor; MAX_DECODE_PIXELS = 4096**2


@dataclass
class CompressResult:
    """What a compress run wrote (the CLI prints :meth:`summary`).

    Args:
        store: the store's path.
        tiles: cells of the tile grid.
        written: tiles coded.
        dropped_nodata: tiles dropped for having no (or too few) valid pixels.
        dropped_constant: tiles stored as their single value.
        tile_bytes: bytes of the coded tiles.
        blocks_done: shard blocks written by this run.
        blocks_resumed: shard blocks an earlier run had written.
        seconds: wall time of this call.
        bits: the bit depth coded at.
        bpp: tile bytes over the scene's pixels.
        quality: the quality (or variable-rate level) coded at.
        rate_control: the target and the search's result, when a target was given.
    """
    store: Path
    tiles: int
    written: int
    dropped_nodata: int
    dropped_constant: int
    tile_bytes: int
    blocks_done: int
    blocks_resumed: int
    seconds: float
    bits: int
    bpp: float = 0.0                     # tile bytes over the scene's pixels
    quality: float = 0                   # the quality (or variable-rate level) coded at
    rate_control: dict | None = None     # target and search result, when a target was given

    def summary(self) -> dict[str, Any]:
        """The result as JSON-ready data.

        Returns:
            Its fields by name, the store as a string.
        """
        return self.__dict__ | {"store": str(self.store)}


def _slices(rs: slice, cs: slice) -> tuple[tuple[int, int], tuple[int, int]]:
    return (rs.start, rs.stop), (cs.start, cs.stop)


def encode_part(store: str, paths: Sequence[str], rows: tuple[int, int], cols: tuple[int, int],
                spec: dict, bits: int, tile_filter: dict) -> dict[str, Any]:
    """The encode task: read, filter and encode a few tiles of a shard block (nothing written).

    Args:
        store: the store's folder (its grid and codec config are read from it).
        paths: the source files.
        rows: the part's tile rows, ``(start, stop)``.
        cols: its tile columns.
        spec: the codec, as :meth:`~.workers.CodecSpec.to_dict` gives it.
        bits: the bit depth coded at.
        tile_filter: :class:`~geocompress.geo.TileFilter`'s fields.

    Returns:
        The part's rows and columns, tile status, strings, masks, constant values and raw bytes
        read, for :func:`write_shard`.

    Raises:
        SceneReadError: a tile that cannot be read (a truncated or damaged file).
    """
    ts = TileStore.open(store, "r")
    grid = ts.grid
    flt = TileFilter(**tile_filter)
    codec = get_codec(CodecSpec(**spec))
    halo = int(ts.codec_meta["config"].get("halo", 0))
    ranges = ts.codec_meta["config"].get("value_range")
    clip = clip_ranges(ranges, bits, int(ts.meta["count"]))
    context = codec.latent_stride * halo
    edges = store_edges(ts.codec_meta["config"])
    sides_kept: list[tuple[int, int, int, int]] = []
    shape = (rows[1] - rows[0], cols[1] - cols[0])
    status = np.zeros(shape, np.uint8)
    strings = np.full(shape, None, dtype=object)
    masks = np.full(shape, b"", dtype=object)
    constants = np.zeros((*shape, int(ts.meta["count"])), dtype=ts.meta["dtype"])
    kept: list[tuple[int, int]] = []
    pixels_kept: list[np.ndarray] = []
    raw = 0
    # GDAL's block cache defaults to 5% of RAM and fills as a large scene is read: cap it, so
    # memory stays flat with scene size (each block is read once; the cache buys nothing).
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), SceneReader([Path(p) for p in paths]) as reader:
        for i, r in enumerate(range(*rows)):
            for j, c in enumerate(range(*cols)):
                pixels, valid = reader.read_tile_checked(grid, r, c)
                raw += pixels.nbytes
                decision = flt.decide(pixels, valid, grid.in_scene_pixels(r, c))
                status[i, j] = decision.status
                if decision.status == TileStatus.DROPPED_NODATA:
                    continue
                inside = np.zeros_like(valid)
                win = grid.valid_window(r, c)
                inside[: int(win.height), : int(win.width)] = True
                # only in-scene nodata is recorded; constant tiles keep theirs too (a saturated
                # tile at a swath edge is one value *and* nodata)
                masks[i, j] = encode_mask(valid | ~inside)
                if decision.status == TileStatus.DROPPED_CONSTANT:
                    constants[i, j] = constant_value(pixels, valid)
                    continue
                kept.append((i, j))
                # with a halo the encoder also sees its neighbours' pixels (issue 26)
                sd = (grid_sides(grid, r, c, halo) if edges == "truncate" else (halo,) * 4)
                sides_kept.append(sd)
                ctx = (reader.read_context(grid, r, c, context, tuple(codec.latent_stride * v for v in sd))
                       if halo else pixels)
                pixels_kept.append(within_range(ctx, pixels, valid, clip, sd, codec.latent_stride))
    n = max(1, codec.batch_size)
    for k in range(0, len(kept), n):  # batch by batch: the float copies never coexist
        got = codec.encode(pixels_kept[k:k + n], bits=bits, halo=halo, sides=sides_kept[k:k + n],
                           ranges=ranges)
        for (i, j), s in zip(kept[k:k + n], got):
            strings[i, j] = s
    return {"rows": rows, "cols": cols, "status": status, "strings": strings, "masks": masks,
            "constants": constants, "raw": raw}


def write_shard(store: str, rows: tuple[int, int], cols: tuple[int, int],
                parts: list[dict[str, Any]]) -> dict[str, int]:
    """The write task: a shard block's encoded parts, written as one block (status last, so an
    interrupted run leaves the block pending).

    Args:
        store: the store's folder.
        rows: the block's tile rows, ``(start, stop)``.
        cols: its tile columns.
        parts: :func:`encode_part`'s results that cover the block.

    Returns:
        Counts for the progress bar and the result: tiles, written, bytes, raw bytes, dropped.
    """
    ts = TileStore.open(store, "r+")
    shape = (rows[1] - rows[0], cols[1] - cols[0])
    status = np.zeros(shape, np.uint8)
    strings = np.full(shape, None, dtype=object)
    masks = np.full(shape, b"", dtype=object)
    constants = np.zeros((*shape, int(ts.meta["count"])), dtype=ts.meta["dtype"])
    for part in parts:
        r = slice(part["rows"][0] - rows[0], part["rows"][1] - rows[0])
        c = slice(part["cols"][0] - cols[0], part["cols"][1] - cols[0])
        status[r, c], strings[r, c] = part["status"], part["strings"]
        masks[r, c], constants[r, c] = part["masks"], part["constants"]
    ts.write_block(slice(*rows), slice(*cols), strings, status, constants, masks)
    return {"tiles": status.size, "written": int((status == TileStatus.WRITTEN).sum()),
            "bytes": sum(len(s) for s in strings.ravel() if s),
            "raw": sum(p["raw"] for p in parts),
            "dropped_nodata": int((status == TileStatus.DROPPED_NODATA).sum()),
            "dropped_constant": int((status == TileStatus.DROPPED_CONSTANT).sum())}


def split_block(rows: tuple[int, int], cols: tuple[int, int], tiles_per_task: int
                ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """A shard block cut row by row into runs of at most ``tiles_per_task`` tiles: tasks small
    enough that every worker has work and the progress bar moves, on any scene size.

    Args:
        rows: the block's tile rows, ``(start, stop)``.
        cols: its tile columns.
        tiles_per_task: the longest run.

    Returns:
        ``(rows, cols)`` of each encode part.
    """
    step = max(1, int(tiles_per_task))
    return [((r, r + 1), (c, min(c + step, cols[1])))
            for r in range(*rows) for c in range(cols[0], cols[1], step)]


def _run_blocks(client, job: "_Job", ts: TileStore, spec: dict, used_bits: int
                ) -> tuple[list, list]:
    """The graph of a compress run: encode parts, and one write task per pending shard block."""
    store, scene, filter_cfg = job.store, job.scene, job.filter_cfg
    tiles_per_task, progress, on_block = (job.cluster.tiles_per_task, job.cluster.progress,
                                          job.cluster.on_block)
    all_blocks = list(ts.shard_blocks())
    pending = list(ts.pending_blocks())
    paths = [str(p) for p in scene.paths]
    kinds: dict = {}
    futures = []
    for rs, cs in pending:
        rows, cols = _slices(rs, cs)
        parts = [client.submit(encode_part, str(store), paths, r, c, spec, used_bits,
                               filter_cfg, pure=False)
                 for r, c in split_block(rows, cols, tiles_per_task)]
        for f, (r, c) in zip(parts, split_block(rows, cols, tiles_per_task)):
            kinds[f.key] = (r[1] - r[0]) * (c[1] - c[0])
        write = client.submit(write_shard, str(store), rows, cols, parts, pure=False)
        futures += parts + [write]
    totals = {"tiles": 0, "written": 0, "bytes": 0, "raw": 0, "dropped_nodata": 0,
              "dropped_constant": 0}
    n_tiles = sum((rs.stop - rs.start) * (cs.stop - cs.start) for rs, cs in pending)
    bar = tqdm(total=n_tiles, unit="tile", disable=not progress, desc=f"compress {scene.name}",
               dynamic_ncols=True)
    try:
        blocks = 0
        for fut in as_completed(futures):
            if fut.key in kinds:  # an encode part: progress, tile by tile
                fut.result()  # raises the task's error here
                bar.update(kinds[fut.key])
                continue
            counts = fut.result()
            for k in totals:
                totals[k] += counts[k]
            blocks += 1
            rate = totals["raw"] / 1e6 / max(bar.format_dict["elapsed"], 1e-9)
            bar.set_postfix_str(f"{rate:.2f} MB/s raw, {totals['bytes'] / 1e6:.2f} MB out")
            if on_block is not None:
                on_block(blocks)
    finally:
        bar.close()
        for f in futures:
            f.cancel()
    return all_blocks, pending


def _any_written(store: Path) -> bool:
    try:
        return bool((TileStore.open(store).status() != TileStatus.PENDING).any())
    except Exception:  # noqa: BLE001 - a store too broken to read is not worth keeping
        return False


@dataclass(frozen=True)
class TilingChoice:
    """How a scene is cut into tiles and shards, which tiles are coded, and at what bit depth.

    Args:
        tile: tile side in pixels, :data:`MIN_TILE`..:data:`MAX_TILE` (the models' downsampling
            factor .. the codec's largest tile).
        shard: tiles per shard side: one file per Zarr array and one write task per shard block.
        tile_filter: which tiles are dropped (nodata, too few valid pixels) or stored as their
            single value (constant) instead of being coded.
        bits: significant bits of a uint16 scene, 8..16, or ``"auto"`` (the declared ``NBITS``,
            else the bit length of its largest valid value); uint8 scenes are coded with 8.
        halo: latent pixels of neighbour context (0: each tile coded alone), or ``"auto"``
            (:func:`~geocompress.scene.halo.resolve_halo`: a resumed store keeps its own).
        value_range: what maps to the model's 0 .. 1: ``"scene"`` each band's range of valid
            values over the scene (one pass; :mod:`~geocompress.scene.value_range`), ``"bits"``
            ``0 .. 2**bits - 1`` (stores before it existed). A resumed store keeps its own.

    Examples:
        >>> from geocompress.scene.compress import TilingChoice
        >>> TilingChoice(tile=128).replace(halo=0).halo
        0
    """

    tile: int = 256
    shard: int = 16
    tile_filter: TileFilter = field(default_factory=TileFilter)
    bits: int | str = "auto"
    halo: int | str = "auto"
    value_range: str = "scene"

    def replace(self, **changes: Any) -> "TilingChoice":
        """This choice with some fields changed (the dataclass is frozen).

        Args:
            **changes: field values.

        Returns:
            A new choice.
        """
        return replace(self, **changes)


# compress_scene's codec when none is given: batches of 8 tiles per encode task
SCENE_CODEC = CodecChoice(batch_size=8)


@dataclass
class _Job:
    """A compress run's settled inputs, shared by its parts."""

    store: Path
    scene: SceneInfo
    grid: TileGrid
    codec: Any                  # the TileCodec built here (rate search, in-process tasks)
    choice: CodecChoice
    tiling: TilingChoice
    cluster: ClusterChoice
    halo: int
    local: bool                 # the tasks run in this process
    threads: int | None         # torch threads per worker
    rate: RateTarget | None
    overwrite: bool

    @property
    def filter_cfg(self) -> dict:
        f = self.tiling.tile_filter
        return {"min_valid_fraction": f.min_valid_fraction, "drop_constant": f.drop_constant}

    @property
    def tiles(self) -> int:
        return self.grid.n_rows * self.grid.n_cols


def _warn_band_nodata(ranges: list[tuple[int, int]], nodata: float) -> None:
    """Warn where a band holds the nodata value at pixels other bands make valid (GDAL's per-band
    masks read them as missing in that band alone): a store keeps one validity mask per scene,
    so they are coded as data and come back one level off the nodata value. Seen when the value
    is a band's minimum or maximum, as nodata values are (0, 255, 65535)."""
    bands = [i + 1 for i, (lo, hi) in enumerate(ranges) if nodata in (lo, hi)]
    if bands:
        warnings.warn(f"band(s) {', '.join(map(str, bands))} hold the nodata value {nodata:g} at "
                      "pixels where other bands are valid: a store keeps one validity mask per "
                      "scene, so those values are coded as data and read back as data (one "
                      "level off the nodata value), not as that band's nodata", stacklevel=3)


def _radiometry(job: "_Job", client) -> tuple[int, list[tuple[int, int]] | None]:
    """The bit depth coded at and each band's range of valid values (None with
    ``--value-range bits``), from one pass over the scene's valid pixels where either needs it."""
    scene, grid, shard, bits = job.scene, job.grid, job.tiling.shard, job.tiling.bits
    declared = (8 if scene.dtype == "uint8" else int(bits) if bits != "auto"
                else int(scene.declared_bits) if scene.declared_bits and 8 <= scene.declared_bits <= 16
                else None)
    if declared is not None and job.tiling.value_range == "bits":
        return declared, None  # no scan needed
    paths = [str(p) for p in scene.paths]
    blocks = [((r, min(r + shard, grid.n_rows)), (c, min(c + shard, grid.n_cols)))
              for r in range(0, grid.n_rows, shard) for c in range(0, grid.n_cols, shard)]
    futures = client.map(scan_block_range, [paths] * len(blocks), [grid.to_dict()] * len(blocks),
                         [b[0] for b in blocks], [b[1] for b in blocks], pure=False)
    parts = client.gather(futures)
    ranges = merge_ranges(parts, scene.count)
    if scene.nodata is not None and any(p is not None for p in parts):
        _warn_band_nodata(ranges, scene.nodata)
    peak = max(hi for _, hi in ranges)
    if declared is not None and peak > (1 << declared) - 1:  # before the store is created
        raise ValueError(f"the scene has valid values up to {peak}, more than bits={declared} "
                         f"allow ({(1 << declared) - 1}): give --bits {peak.bit_length()} or more")
    used = declared or max(8, peak.bit_length())
    return used, (ranges if job.tiling.value_range == "scene" else None)


def compress_scene(source: PathLike | Sequence[PathLike], store: PathLike,
                   codec: CodecChoice | None = None, *, tiling: TilingChoice | None = None,
                   cluster: ClusterChoice | None = None, rate: RateTarget | None = None,
                   overwrite: bool = False, **options: Any) -> CompressResult:
    """Compress ``source`` (a GeoTIFF, or a list of single-band files of one grid) into ``store``.

    Rerunning with the same arguments resumes an interrupted run. In process or on Dask, the same
    tasks write the same bytes (for the same precision and torch thread count: only ``float64``
    transforms are bit-identical across thread counts).

    Args:
        source: a GeoTIFF, or single-band files of one grid stacked as bands in that order.
        store: the Zarr store to write (a folder); its parent folder must exist, so that a typo
            in a path is refused before any work rather than created.
        codec: the codec (default :data:`SCENE_CODEC`: shipped ``mgssnet`` weights at the middle
            quality, 8 tiles per batch). ``refine_steps`` > 0 refines each tile's latent at
            encode time (:mod:`geocompress.codec.refine`); ``precision`` is not stored: a store
            decodes in any mode. Dask workers pick their own device (``--resources GPU=1``).
        tiling: tile and shard sizes, the tile filter, the bit depth and the halo (default
            :class:`TilingChoice`). A halo gives the encoder that much of each tile's
            neighbourhood and the decoder the same ring of latents, so that tile borders do not
            show (``catalogs/halo.md``, ``catalogs/seams.md``).
        cluster: where the tasks run (default: in this process for jobs of at most
            :data:`~geocompress.scene.cluster.SMALL_JOB_TILES` tiles when neither a scheduler, nor
            workers nor a GPU is asked for, else on Dask), tiles per task and progress.
        rate: a variable-rate model only: code at a target bpp or PSNR instead of a quality; the
            level is searched for on a sample of the scene's tiles before anything is written
            (:mod:`geocompress.scene.rate_control`) and recorded with the target in the store.
        overwrite: replace a store written with other weights, quality, source or settings.
        **options: single fields of ``codec``, ``tiling`` or ``cluster`` by name
            (``quality=2``, ``workers=4``, ``tile=128``; ``model_config`` for the codec's
            ``config``), so that a call can name only what differs.

    Returns:
        What was written: tiles kept and dropped, bytes, bpp, bits, the quality coded at, and
        the rate search's result when a target was given.

    Raises:
        ValueError: a tile size out of range, bits that do not fit the scene, a halo with
            overlapping tiles, a scene the codec cannot code (too many bands), or a quality
            together with a rate target.
        FileNotFoundError: the store's parent folder does not exist.
        TypeError: an option that is no field of the three values.
        RateTargetError: a rate target for fixed-rate weights, or one no level reaches.
        StoreError: an existing store written with other settings (without ``overwrite``).
        WeightsError: missing or damaged weights, or an unknown quality.

    Examples:
        >>> import tempfile, numpy as np, rasterio
        >>> from rasterio.transform import from_origin
        >>> from geocompress.codec import CodecChoice
        >>> from geocompress.scene import compress_scene
        >>> folder, rng = tempfile.mkdtemp(), np.random.default_rng(0)
        >>> pixels = rng.integers(0, 255, (3, 128, 128), dtype=np.uint8)
        >>> with rasterio.open(f"{folder}/scene.tif", "w", driver="GTiff", width=128, height=128,
        ...                    count=3, dtype="uint8", crs="EPSG:32633",
        ...                    transform=from_origin(500000, 4100000, 10, 10)) as dst:
        ...     dst.write(pixels)
        >>> tiny = CodecChoice(pretrained=False, config={"N": 16, "M": 24})
        >>> result = compress_scene(f"{folder}/scene.tif", f"{folder}/scene.zarr", tiny,
        ...                         tile=64, progress=False)
        >>> result.tiles, result.written, result.bits
        (4, 4, 8)
    """
    t0 = time.perf_counter()
    codec, tiling, cluster = fold("compress_scene", options, codec or SCENE_CODEC,
                                  tiling or TilingChoice(), cluster or ClusterChoice())
    job = _prepare(source, Path(store), codec, tiling, cluster, rate, overwrite)
    # a full disk (zarr's writes, here or on a worker) ends the run with one line; the blocks
    # written so far are kept, as for any interruption, and a rerun resumes
    with disk_full_reported(job.store, "writing the store", where=job.store,
                            advice="free some space and rerun the same command: it resumes "
                                   "where it stopped"):
        with dask_client(cluster.scheduler, cluster.workers, cluster.processes, cluster.gpu,
                         in_process=job.local, torch_threads=cluster.torch_threads) as client:
            ts, created, used_bits, rate_record = _open_or_create(job, client)
            blocks = _encode(job, client, ts, created, used_bits)
        interrupt.check()  # an interrupted run never marks its store complete
        return _finish(job, used_bits, rate_record, blocks, t0)


def _prepare(source: PathLike | Sequence[PathLike], store: Path, choice: CodecChoice,
             tiling: TilingChoice, cluster: ClusterChoice, rate: RateTarget | None,
             overwrite: bool) -> _Job:
    """Everything checked before any work: sizes, paths, bits, halo, the codec, the grid."""
    tile, bits = tiling.tile, tiling.bits
    if rate is not None and choice.quality is not None:  # as the CLI: one of them sets the rate
        raise ValueError(f"give a quality or a rate target, not both (quality={choice.quality}, "
                         f"rate={rate})")
    if tiling.value_range not in VALUE_RANGES:
        raise ValueError(f"value_range must be one of {VALUE_RANGES}, got {tiling.value_range!r}")
    if not isinstance(tile, int) or not MIN_TILE <= tile <= MAX_TILE:
        raise ValueError(f"tile must be {MIN_TILE}..{MAX_TILE} pixels (the codec's largest tile), "
                         f"got {tile!r}")
    if not store.parent.is_dir():  # before any work; as decompress does for its output file
        raise FileNotFoundError(f"output folder {store.parent} does not exist (create it first; "
                                f"compress does not create folders)")
    scene = open_scene(source)
    if bits != "auto":  # before any work: _bits_for would code a uint8 scene with 8 regardless
        high = 8 if str(scene.dtype) == "uint8" else 16
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 8 <= bits <= high:
            raise ValueError(
                f"bits={bits!r} (--bits) does not fit this {scene.dtype} scene: " + (
                    "uint8 data is coded with its 8 bits; --bits declares the significant bits "
                    "of uint16 scenes" if high == 8 else
                    "give 8..16, the significant bits of its values, or 'auto'"))
    tiling = tiling.replace(tile_filter=tiling.tile_filter or TileFilter())
    stored_halo = _stored_halo(store) if store.exists() and not overwrite else None
    halo = resolve_halo(tiling.halo, choice.arch, choice.quality, choice.pretrained,
                        choice.checkpoint, stored=stored_halo)
    if (halo and tiling.halo != "auto" and stored_halo is None
            and (choice.pretrained or choice.checkpoint is not None)
            and not resolve_halo("auto", choice.arch, choice.quality, choice.pretrained,
                                 choice.checkpoint)):
        warnings.warn(f"halo {halo} with weights that have no halo prior: their entropy model "
                      f"mispredicts a halo tile's edges and it costs far more bits (+85 % measured, "
                      f"catalogs/halo.md); fit one with pipelines/fit_halo_priors.py", stacklevel=3)
    # the codec built here (rate search, in-process tasks) loads with the codec's own batch
    # size; the tasks then run with the choice's (CodecSpec)
    codec = load_codec(choice.replace(batch_size=CodecChoice().batch_size), halo_prior=bool(halo))
    codec.check_work(scene.count, tile, tile)  # a scene of too many bands: before any work
    grid = scene.grid(tile)
    if halo and grid.step != grid.tile:
        raise ValueError("halo needs non-overlapping tiles (stride == tile)")
    local = cluster.runs_here(grid.n_rows * grid.n_cols)
    # Dask's nanny starts workers with OMP/MKL threads = 1: give torch the cores explicitly
    # (split between local worker processes); on an existing cluster, only when asked. In this
    # process: torch_threads (default 1) while the tasks run (cluster.dask_client).
    threads = cluster.torch_threads or (default_torch_threads(cluster.workers)
                                        if cluster.scheduler is None and not local else None)
    if rate is not None and not codec.variable_rate:
        raise RateTargetError(f"{codec.arch} weights have one rate each: --target-bpp / "
                              f"--target-psnr need a variable-rate model (--arch mgssnet-vr)")
    return _Job(store, scene, grid, codec, choice, tiling, cluster, halo, local, threads, rate,
                overwrite)


def _open_or_create(job: _Job, client) -> tuple[TileStore, bool, int, dict | None]:
    """The store to write into: the existing one (checked compatible, to resume) or a new one
    (bit depth scanned, rate searched). Returns it, whether it was created, the bits coded at
    and the rate search's record."""
    codec, store, rate, bits = job.codec, job.store, job.rate, job.tiling.bits
    rate_record: dict | None = None
    if store.exists() and not job.overwrite:
        ts = TileStore.open(store, "r+")
        ts.verify()  # a resume builds on what is there: damaged or swapped tiles stop it here
        stored = ts.codec_meta["config"]
        want_bits = stored.get("bits") if bits == "auto" else int(bits)
        if rate is not None:  # a resumed run keeps the level its search chose
            rate_record = _resumed_rate(ts, rate, codec)
        ts.check_compatible(job.scene.checksum,
                            _codec_meta(codec, want_bits, job.filter_cfg, job.halo, rate_record,
                                        stored.get("value_range")),
                            tile=job.tiling.tile)
        return ts, False, int(stored["bits"]), rate_record
    used_bits, found = _radiometry(job, client)
    # the alpha bands that are pure masks (0 / opaque at the bits coded): decode rebuilds only
    # those from the stored masks, the others come back as their decoded values
    scene = replace(job.scene, alpha_is_mask=alpha_masks(job.scene, (1 << used_bits) - 1))
    ranges = coded_ranges(found, used_bits, scene.alpha_is_mask) if found else None
    if rate is not None:
        rate_record = _search_rate(job, used_bits, ranges)
    ts = TileStore.create(store, scene, job.grid,
                          _codec_meta(codec, used_bits, job.filter_cfg, job.halo, rate_record,
                                      ranges),
                          shard=job.tiling.shard, overwrite=job.overwrite,
                          tile_version=codec.version_for(bool(ranges)))
    return ts, True, used_bits, rate_record


def _search_rate(job: _Job, used_bits: int, ranges: list[list[int]] | None) -> dict:
    """The level that meets the rate target, searched for on a sample of the scene's tiles
    (the codec is left at it)."""
    scene, grid, codec, rate = job.scene, job.grid, job.codec, job.rate
    tiles_s, masks_s, frac, context = sample_tiles(scene, grid, job.tiling.tile_filter, rate.sample,
                                                   halo=job.halo, stride=codec.latent_stride)
    clip = clip_ranges(ranges, used_bits, scene.count)
    tiles_s = [within_range(t, t, m, clip, (0, 0, 0, 0), codec.latent_stride)
               for t, m in zip(tiles_s, masks_s)]  # what encode_part codes
    if context is not None:
        context.pixels[:] = [within_range(p, t, m, clip, sd, codec.latent_stride)
                             for p, t, m, sd in zip(context.pixels, tiles_s, masks_s, context.sides)]
    return {"sample": rate.sample, **choose_level(
        codec, tiles_s, masks_s, used_bits, rate,
        Extent(frac, job.tiles, scene.width * scene.height), ranges, context).to_dict()}


def _encode(job: _Job, client, ts: TileStore, created: bool, used_bits: int) -> tuple[int, int]:
    """Run the encode and write tasks; returns (blocks written now, blocks already done). A run
    that fails before writing anything leaves no half-made store behind; one that wrote blocks
    keeps them, to resume."""
    choice, checkpoint = job.choice, job.choice.checkpoint
    spec = CodecSpec.of(job.codec, checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
                        batch_size=choice.batch_size,
                        torch_threads=None if job.local else job.threads,
                        precision=choice.precision, pretrained=choice.pretrained).to_dict()
    if job.local:  # the tasks run here: they use this codec, the weights load once
        adopt_codec(CodecSpec(**spec), job.codec)
    job.codec = None  # on a cluster the client does not encode; workers load their own
    try:
        all_blocks, pending = _run_blocks(client, job, ts, spec, used_bits)
    except BaseException:
        if created and not _any_written(job.store):
            shutil.rmtree(job.store, ignore_errors=True)
        raise
    return len(pending), len(all_blocks) - len(pending)


def _finish(job: _Job, used_bits: int, rate_record: dict | None, blocks: tuple[int, int],
            t0: float) -> CompressResult:
    """Mark the store complete, write its STAC item, and say what was written."""
    store, scene, grid = job.store, job.scene, job.grid
    ts = TileStore.open(store, "r+")
    ts.mark_complete()
    tile_bytes = ts.nbytes_tiles()
    bpp = round(tile_bytes * 8 / (scene.width * scene.height), 5)
    write_stac_item(store, scene, grid, ts.codec_meta, achieved_bpp=bpp)
    counts = ts.status_counts()
    return CompressResult(store=store, tiles=job.tiles,
                          written=counts["WRITTEN"], dropped_nodata=counts["DROPPED_NODATA"],
                          dropped_constant=counts["DROPPED_CONSTANT"],
                          tile_bytes=tile_bytes, blocks_done=blocks[0], blocks_resumed=blocks[1],
                          seconds=time.perf_counter() - t0, bits=used_bits, bpp=bpp,
                          quality=ts.codec_meta["quality"], rate_control=rate_record)


def _resumed_rate(ts: TileStore, rate: RateTarget, codec) -> dict:
    """The stored search result when the stored target is the one asked for (the codec set to
    its level), else the asked target alone, which the compatibility check then refuses."""
    stored = ts.codec_meta["config"].get("rate_control")
    asked = {"sample": rate.sample, "target": rate.kind, "value": rate.value}
    if stored and all(stored.get(k) == v for k, v in asked.items()):
        codec.set_level(float(ts.codec_meta["quality"]))
        return stored
    return asked


def _stored_halo(store: Path) -> int | None:
    """The halo of a store being resumed (None if it is not a readable store)."""
    try:
        return int(TileStore.open(store, "r").codec_meta["config"].get("halo", 0))
    except Exception:  # noqa: BLE001 - not a store: creating it reports the problem
        return None


def _codec_meta(codec, bits: int, filter_cfg: dict, halo: int = 0,
                rate_control: dict | None = None, ranges: list | None = None) -> dict:
    config = {"model": dict(codec.config), "bits": int(bits), "filter": filter_cfg}
    if ranges:  # only when coded with them: stores without stay resumable as they were
        config["value_range"] = [[int(lo), int(hi)] for lo, hi in ranges]
    if rate_control is not None:  # only when asked: other stores stay resumable as they were
        config["rate_control"] = rate_control
    if halo:  # only when on: stores written without it stay resumable as they were
        config["halo"] = int(halo)
        config["halo_edges"] = "truncate"  # geocompress.scene.halo
    if codec.refine_steps:  # only when on: stores written without it stay resumable as they were
        config["refine_steps"] = codec.refine_steps
    return {"arch": codec.arch, "digest": codec.digest, "quality": codec.quality, "config": config}


__all__ = ["CompressResult", "TilingChoice", "compress_scene", "encode_part", "write_shard", "split_block"]
