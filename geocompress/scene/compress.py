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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import rasterio
from tqdm.auto import tqdm

from .. import interrupt
from ..codec import load_codec
from ..geo import SceneReader, TileFilter, TileGrid, TileStatus, constant_value, open_scene
from ..geo.errors import SceneReadError
from ..geo.source import SceneInfo
from ..store import TileStore
from ..store.stac import write_stac_item
from .failures import disk_full_reported
from .halo import grid_sides, resolve_halo, store_edges
from .cluster import as_completed, dask_client, default_torch_threads, runs_in_process
from .rate_control import RateTarget, RateTargetError, choose_level, sample_tiles
from .workers import CodecSpec, adopt_codec, encode_mask, get_codec

PathLike = str | Path
GDAL_CACHE_MB = 64
MIN_TILE, MAX_TILE = 64, 4096  # the models' downsampling factor; MAX_DECODE_PIXELS = 4096**2


@dataclass
class CompressResult:
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
        return self.__dict__ | {"store": str(self.store)}


def _slices(rs: slice, cs: slice) -> tuple[tuple[int, int], tuple[int, int]]:
    return (rs.start, rs.stop), (cs.start, cs.stop)


def scan_block_max(paths: Sequence[str], grid: dict, rows: tuple[int, int],
                   cols: tuple[int, int]) -> int:
    """Largest valid value in a block (first pass for uint16 scenes' bit depth)."""
    g = TileGrid.from_dict(grid)
    best = 0
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), SceneReader([Path(p) for p in paths]) as reader:
        for r in range(*rows):
            for c in range(*cols):
                pixels, valid = reader.read_tile(g, r, c)
                if valid.any():
                    best = max(best, int(pixels[:, valid].max()))
    return best


def encode_part(store: str, paths: Sequence[str], rows: tuple[int, int], cols: tuple[int, int],
                spec: dict, bits: int, tile_filter: dict) -> dict[str, Any]:
    """The encode task: read, filter and encode a few tiles of a shard block (nothing written)."""
    ts = TileStore.open(store, "r")
    grid = ts.grid
    flt = TileFilter(**tile_filter)
    codec = get_codec(CodecSpec(**spec))
    halo = int(ts.codec_meta["config"].get("halo", 0))
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
                failed = None
                try:
                    pixels, valid = reader.read_tile(grid, r, c)
                except rasterio.errors.RasterioError as e:
                    failed = str(e)
                if failed is not None:  # raised outside the handler: no unpicklable GDAL context
                    raise SceneReadError(f"{', '.join(paths)}: reading tile ({r}, {c}) failed "
                                         f"(truncated or damaged file?): {failed}")
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
                pixels_kept.append(_within_bits(ctx, pixels, valid, bits, sd, codec.latent_stride))
    n = max(1, codec.batch_size)
    for k in range(0, len(kept), n):  # batch by batch: the float copies never coexist
        got = codec.encode(pixels_kept[k:k + n], bits=bits, halo=halo, sides=sides_kept[k:k + n])
        for (i, j), s in zip(kept[k:k + n], got):
            strings[i, j] = s
    return {"rows": rows, "cols": cols, "status": status, "strings": strings, "masks": masks,
            "constants": constants, "raw": raw}


def _within_bits(ctx: np.ndarray, tile: np.ndarray, valid: np.ndarray, bits: int,
                 sides: tuple[int, int, int, int], stride: int) -> np.ndarray:
    """The encoder's input with nodata fill (and halo context) brought within ``bits``: the bit
    depth is scanned over valid pixels only, so a fill such as 65535 in 12-bit data would
    otherwise stop the encode. Valid pixels of the tile itself are left as they are (one out of
    range is an error, never clipped), and what the encoder sees outside them never reaches a
    decoded valid pixel."""
    top = (1 << int(bits)) - 1
    if ctx.dtype.kind not in "ui" or ctx.max() <= top:
        return ctx
    out = np.minimum(ctx, top).astype(ctx.dtype)
    y, x = sides[0] * stride, sides[2] * stride
    t = tile.shape[-1]
    core = (slice(None), slice(y, y + tile.shape[-2]), slice(x, x + t))
    out[core] = np.where(valid[None], tile, out[core])
    return out


def write_shard(store: str, rows: tuple[int, int], cols: tuple[int, int],
                parts: list[dict[str, Any]]) -> dict[str, int]:
    """The write task: a shard block's encoded parts, written as one block (status last)."""
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
    enough that every worker has work and the progress bar moves, on any scene size."""
    step = max(1, int(tiles_per_task))
    return [((r, r + 1), (c, min(c + step, cols[1])))
            for r in range(*rows) for c in range(cols[0], cols[1], step)]


def _run_blocks(client, ts: TileStore, store: Path, scene: SceneInfo, spec: dict, used_bits: int,
                filter_cfg: dict, tiles_per_task: int, progress: bool,
                on_block: Callable[[int], None] | None) -> tuple[list, list]:
    """The graph of a compress run: encode parts, and one write task per pending shard block."""
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


def _bits_for(scene: SceneInfo, bits: int | str, client, grid: TileGrid, shard: int) -> int:
    if scene.dtype == "uint8":
        return 8
    if bits != "auto":
        return int(bits)
    if scene.declared_bits and 8 <= scene.declared_bits <= 16:
        return int(scene.declared_bits)  # the sensor's declared depth: no scan needed
    paths = [str(p) for p in scene.paths]
    blocks = [((r, min(r + shard, grid.n_rows)), (c, min(c + shard, grid.n_cols)))
              for r in range(0, grid.n_rows, shard) for c in range(0, grid.n_cols, shard)]
    futures = client.map(scan_block_max, [paths] * len(blocks), [grid.to_dict()] * len(blocks),
                         [b[0] for b in blocks], [b[1] for b in blocks], pure=False)
    peak = max(client.gather(futures))
    return max(8, int(peak).bit_length())


def compress_scene(source: PathLike | Sequence[PathLike], store: PathLike, *, arch: str = "mgssnet",
                   quality: int | None = None, checkpoint: str | None = None,
                   pretrained: bool = True, model_config: dict | None = None, tile: int = 256,
                   shard: int = 16, tile_filter: TileFilter | None = None,
                   bits: int | str = "auto", scheduler: str | None = None, workers: int | None = None,
                   processes: bool = True, batch_size: int = 8, precision: str = "auto",
                   overwrite: bool = False, progress: bool = True, gpu: bool = False,
                   torch_threads: int | None = None, on_block: Callable[[int], None] | None = None,
                   refine_steps: int = 0, tiles_per_task: int = 4,
                   halo: int | str = "auto", rate: RateTarget | None = None,
                   in_process: bool | None = None) -> CompressResult:
    """Compress ``source`` (a GeoTIFF, or a list of single-band files of one grid) into ``store``.

    ``refine_steps`` > 0 refines each tile's latent at encode time (:mod:`geocompress.codec.refine`):
    fewer bits or higher PSNR for the same decoder, at a forward and backward pass per step.
    ``precision`` is the transforms' mode (:mod:`geocompress.codec.precision`); it is not stored:
    a store decodes in any mode. Each task encodes ``tiles_per_task`` tiles; one write task per
    shard block writes them once all its parts are done. ``halo`` (latent pixels; 0 = every
    tile coded alone) gives the encoder that much of each tile's neighbourhood and the decoder
    the same ring of neighbouring latents, so that tile borders do not show; ``"auto"``: see
    :func:`geocompress.scene.halo.resolve_halo` (``catalogs/halo.md``, ``catalogs/seams.md``).

    ``rate`` (a variable-rate model only): code the scene at a target bpp or PSNR instead of a
    quality; the level is searched for on a sample of the scene's tiles before anything is
    written (:mod:`geocompress.scene.rate_control`), and recorded with the target in the store.

    ``in_process``: run the tasks in this process instead of on Dask (True), or on Dask (False);
    default: in this process when the scene has at most
    :data:`~geocompress.scene.cluster.SMALL_JOB_TILES` tiles and neither ``scheduler`` nor
    ``workers`` nor ``gpu`` is given (:mod:`.cluster`). Both paths run the same tasks and write
    the same bytes (for the same precision and torch thread count: only ``float64`` transforms
    are bit-identical across thread counts).

    Rerunning with the same arguments resumes an interrupted run; a store written with other
    weights, quality, source or settings is refused unless ``overwrite``. The store's parent
    folder must exist (as :func:`~geocompress.scene.mosaic.decompress_scene` requires of its
    output's): a typo in a path is refused before any work, not created.
    """
    t0 = time.perf_counter()
    if not isinstance(tile, int) or not MIN_TILE <= tile <= MAX_TILE:
        raise ValueError(f"tile must be {MIN_TILE}..{MAX_TILE} pixels (the codec's largest tile), "
                         f"got {tile!r}")
    store = Path(store)
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
    tile_filter = tile_filter or TileFilter()
    store = Path(store)
    halo = resolve_halo(halo, arch, quality, pretrained, checkpoint,
                        stored=_stored_halo(store) if store.exists() and not overwrite else None)
    codec = load_codec(arch, quality=quality, pretrained=pretrained, checkpoint=checkpoint,
                       precision=precision, refine_steps=refine_steps, halo_prior=bool(halo),
                       **(model_config or {}))
    codec.check_work(scene.count, tile, tile)  # a scene of too many bands: before any work
    grid = scene.grid(tile)
    if halo and grid.step != grid.tile:
        raise ValueError("halo needs non-overlapping tiles (stride == tile)")
    store = Path(store)
    # Dask's nanny starts workers with OMP/MKL threads = 1: give torch the cores explicitly
    # (split between local worker processes); on an existing cluster, only when asked.
    local = runs_in_process(grid.n_rows * grid.n_cols, scheduler, workers, gpu, in_process)
    # in this process: torch_threads (default 1) while the tasks run (cluster.dask_client)
    threads = torch_threads or (default_torch_threads(workers) if scheduler is None and not local
                                else None)
    if rate is not None and not codec.variable_rate:
        raise RateTargetError(f"{codec.arch} weights have one rate each: --target-bpp / "
                              f"--target-psnr need a variable-rate model (--arch mgssnet-vr)")
    filter_cfg = {"min_valid_fraction": tile_filter.min_valid_fraction,
                  "drop_constant": tile_filter.drop_constant}
    rate_record: dict | None = None
    # a full disk (zarr's writes, here or on a worker) ends the run with one line; the blocks
    # written so far are kept, as for any interruption, and a rerun resumes
    with disk_full_reported(store, "writing the store", where=store,
                            advice="free some space and rerun the same command: it resumes "
                                   "where it stopped"):
        with dask_client(scheduler, workers, processes, gpu, in_process=local,
                         torch_threads=torch_threads) as client:
            ts = None
            created = False
            if store.exists() and not overwrite:
                ts = TileStore.open(store, "r+")
                stored_bits = ts.codec_meta["config"].get("bits")
                want_bits = stored_bits if bits == "auto" else int(bits)
                if rate is not None:  # a resumed run keeps the level its search chose
                    rate_record = _resumed_rate(ts, rate, codec)
                ts.check_compatible(scene.checksum,
                                    _codec_meta(codec, want_bits, filter_cfg, halo, rate_record),
                                    tile=tile)
                used_bits = int(stored_bits)
            else:
                used_bits = _bits_for(scene, bits, client, grid, shard)
                if rate is not None:
                    tiles_s, masks_s, frac = sample_tiles(scene, grid, tile_filter, rate.sample)
                    tiles_s = [_within_bits(t, t, m, used_bits, (0, 0, 0, 0), codec.latent_stride)
                               for t, m in zip(tiles_s, masks_s)]  # what encode_part codes
                    rate_record = {"sample": rate.sample, **choose_level(
                        codec, tiles_s, masks_s, used_bits, rate, frac, grid.n_rows * grid.n_cols,
                        scene.width * scene.height).to_dict()}
                    del tiles_s, masks_s
                ts = TileStore.create(store, scene, grid,
                                      _codec_meta(codec, used_bits, filter_cfg, halo, rate_record),
                                      shard=shard, overwrite=overwrite,
                                      tile_version=max(codec.versions()))
                created = True
            spec = CodecSpec.of(codec, checkpoint=str(Path(checkpoint).resolve()) if checkpoint else None,
                                batch_size=batch_size, torch_threads=None if local else threads,
                                precision=precision,
                                pretrained=pretrained).to_dict()
            if local:  # the tasks run here: they use this codec, the weights load once
                adopt_codec(CodecSpec(**spec), codec)
            del codec  # on a cluster the client does not encode; workers load their own
            try:
                all_blocks, pending = _run_blocks(client, ts, store, scene, spec, used_bits,
                                                  filter_cfg, tiles_per_task, progress, on_block)
            except BaseException:
                # a run that fails before writing anything leaves no half-made store behind; one
                # that wrote blocks keeps them, to resume
                if created and not _any_written(store):
                    shutil.rmtree(store, ignore_errors=True)
                raise
        interrupt.check()  # an interrupted run never marks its store complete
        ts = TileStore.open(store, "r+")
        ts.mark_complete()
        tile_bytes = ts.nbytes_tiles()
        bpp = round(tile_bytes * 8 / (scene.width * scene.height), 5)
        write_stac_item(store, scene, grid, ts.codec_meta, achieved_bpp=bpp)
        counts = ts.status_counts()
        return CompressResult(store=store, tiles=grid.n_rows * grid.n_cols,
                              written=counts["WRITTEN"], dropped_nodata=counts["DROPPED_NODATA"],
                              dropped_constant=counts["DROPPED_CONSTANT"],
                              tile_bytes=tile_bytes, blocks_done=len(pending),
                              blocks_resumed=len(all_blocks) - len(pending),
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
                rate_control: dict | None = None) -> dict:
    config = {"model": dict(codec.config), "bits": int(bits), "filter": filter_cfg}
    if rate_control is not None:  # only when asked: other stores stay resumable as they were
        config["rate_control"] = rate_control
    if halo:  # only when on: stores written without it stay resumable as they were
        config["halo"] = int(halo)
        config["halo_edges"] = "truncate"  # geocompress.scene.halo
    if codec.refine_steps:  # only when on: stores written without it stay resumable as they were
        config["refine_steps"] = codec.refine_steps
    return {"model": codec.arch, "weights_digest": codec.digest, "quality": codec.quality, "config": config}


def raw_size(store: TileStore) -> int:
    m = store.meta
    return int(m["width"]) * int(m["height"]) * int(m["count"]) * np.dtype(m["dtype"]).itemsize


__all__ = ["CompressResult", "compress_scene", "encode_part", "write_shard", "split_block", "raw_size"]
