"""Build a tiled training dataset as a Zarr v3 store, and describe it in a catalog entry.

Layout (one group; N tiles):

==============  =====================  =======================================================
array           shape / dtype          meaning
==============  =====================  =======================================================
``images``      N x 3 x T x T uint8    tile pixels; one chunk per tile, Zstd (lossless)
``source``      N int16                index into ``attrs["sources"]``
``class``       N int16                index into ``attrs["classes"]``, -1 for scene tiles
``window``      N x 2 int32            (row_off, col_off) of the tile in its source's pixels
``block``       N int32                spatial block in the source's site grid (-1: image)
``split``       N uint8                0 train, 1 val, 2 test (see :mod:`.splits`)
==============  =====================  =======================================================

Scenes whose footprints overlap (same CRS) form one *site*: their tiles are blocked on the
site's first scene's grid, so a place seen twice (two dates) cannot straddle splits; the split
unit is ``(sources[s]["site"], block)``.

``attrs`` holds ``sources`` (per source: kind, paths, CRS WKT, affine transform, size, dtype,
bands used, 16-bit stretch), ``classes``, ``seed``, ``tile``, ``block``, ``counts`` and the rules.

Tiles are read on Dask in waves (one task per scene block or class folder) and appended as they
arrive, so memory stays bounded by a wave whatever the dataset size; splits are assigned once
every block's kept-tile count is known and are written last.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import dask
import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from geocompress.geo import TileFilter, open_scene

from .sources import (SceneSource, TileBatch, compute_in_waves, image_classes, plan_scene,
                      read_images, read_scene_block, scene_sites)
from .splits import RATIOS, SPLIT_NAMES, assign_blocks, assign_stratified

DEFAULT_FILTER = TileFilter(min_valid_fraction=1.0, drop_constant=True)


class _Writer:
    """Appends tile batches to the store's ``images`` and collects per-tile metadata."""

    def __init__(self, root: zarr.Group, tile: int) -> None:
        self.images = root.create_array(
            "images", shape=(0, 3, tile, tile), chunks=(1, 3, tile, tile), dtype="uint8",
            compressors=ZstdCodec(level=5), dimension_names=("tile", "band", "y", "x"))
        self.n = 0
        self.meta: dict[str, list] = {"source": [], "class": [], "window": [], "block": [],
                                      "name": []}

    def append(self, b: TileBatch) -> None:
        k = len(b.pixels)
        if k == 0:
            return
        self.images.resize((self.n + k,) + self.images.shape[1:])
        self.images[self.n:self.n + k] = b.pixels
        self.n += k
        self.meta["source"] += [b.source] * k
        self.meta["class"] += list(b.klass)
        self.meta["window"] += list(b.windows)
        self.meta["block"] += [b.block] * k
        self.meta["name"] += list(b.names) if b.names else [""] * k


def _assign_splits(meta: dict[str, list], sources: list[dict], classes: list[str],
                   seed: int) -> np.ndarray:
    src = np.asarray(meta["source"], dtype=np.int64)
    block = np.asarray(meta["block"], dtype=np.int64)
    klass = np.asarray(meta["class"], dtype=np.int64)
    split = np.zeros(len(src), dtype=np.uint8)
    scene_idx = np.flatnonzero(block >= 0)
    keys = [(sources[int(src[i])]["site"], int(block[i])) for i in scene_idx]
    by_block = assign_blocks(dict(Counter(keys)), seed, RATIOS)
    for i, key in zip(scene_idx, keys):
        split[i] = by_block[key]
    for c in range(len(classes)):
        for s in np.unique(src[(klass == c) & (block < 0)]):
            idx = np.flatnonzero((klass == c) & (src == s) & (block < 0))
            names = [meta["name"][i] for i in idx]
            split[idx] = assign_stratified(names, f"{sources[s]['name']}/{classes[c]}", seed)
    return split


def _counts(split: np.ndarray, src: np.ndarray, klass: np.ndarray, sources: list[dict],
            classes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"total": int(len(split)),
                           "split": {n: int((split == i).sum()) for i, n in enumerate(SPLIT_NAMES)}}
    out["source"] = {s["name"]: {n: int(((src == j) & (split == i)).sum())
                                 for i, n in enumerate(SPLIT_NAMES)}
                     for j, s in enumerate(sources)}
    out["class"] = {c: {n: int(((klass == j) & (split == i)).sum())
                        for i, n in enumerate(SPLIT_NAMES)} for j, c in enumerate(classes)}
    return out


def build_dataset(out: str | os.PathLike, scenes: Sequence[SceneSource | str | os.PathLike] = (),
                  image_folders: Sequence[str | os.PathLike] = (), seed: int = 0, tile: int = 256,
                  block: int = 4, tile_filter: TileFilter = DEFAULT_FILTER, name: str | None = None,
                  scheduler: str = "threads", workers: int = 2, catalog_dir: str | os.PathLike | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Tile ``scenes`` and ``image_folders`` into a Zarr store at ``out``; return its summary
    (also written to ``catalog_dir/<name>.json`` and ``.md`` when ``catalog_dir`` is given).

    ``scheduler`` is a Dask scheduler name (``"threads"``, the default: the reads release the
    GIL in GDAL; ``"sync"`` for debugging) or ``None`` to use an active ``distributed.Client``
    (e.g. a ``LocalCluster``).
    """
    t0 = time.time()
    out = Path(out)
    name = name or out.name.removesuffix(".zarr")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to rebuild it")
    root = zarr.open_group(out, mode="w", zarr_format=3)
    writer = _Writer(root, tile)
    sources: list[dict[str, Any]] = []
    classes: list[str] = []
    tasks = []
    dropped: dict[str, Counter] = {}
    scene_list = [s if isinstance(s, SceneSource) else SceneSource.of(s) for s in scenes]
    sites = scene_sites(scene_list)
    for k, src in enumerate(scene_list):
        ref = open_scene(list(scene_list[sites[k]].paths)).transform
        plan = plan_scene(src, tile=tile, block=block, reference=ref)
        sources.append({**plan.describe(src), "site": sites[k]})
        j = len(sources) - 1
        for b, tiles in sorted(plan.blocks.items()):
            tasks.append(dask.delayed(read_scene_block)(plan, j, b, tiles, tile_filter))
    for folder in image_folders:
        folder = Path(folder)
        sources.append({"name": folder.name, "kind": "classification-images", "paths": [str(folder)],
                        "crs_wkt": None, "transform": None,
                        "fit": "centre crop if larger, edge-replication pad if smaller"})
        j = len(sources) - 1
        for cname, files in image_classes(folder).items():
            if cname not in classes:
                classes.append(cname)
            tasks.append(dask.delayed(read_images)(files, j, classes.index(cname), tile))
    for batch in compute_in_waves(tasks, scheduler, workers):
        writer.append(batch)
        dropped.setdefault(sources[batch.source]["name"], Counter()).update(batch.dropped)
    meta = writer.meta
    split = _assign_splits(meta, sources, classes, seed)
    n = writer.n
    arrays = {
        "source": (np.asarray(meta["source"], np.int16), ("tile",)),
        "class": (np.asarray(meta["class"], np.int16), ("tile",)),
        "window": (np.asarray(meta["window"], np.int32).reshape(n, 2), ("tile", "offset")),
        "block": (np.asarray(meta["block"], np.int32), ("tile",)),
        "split": (split, ("tile",)),
    }
    for key, (arr, dims) in arrays.items():
        a = root.create_array(key, shape=arr.shape, dtype=arr.dtype, chunks=arr.shape or (1,),
                              dimension_names=dims)
        a[...] = arr
    for s in sources:
        s["dropped"] = dict(dropped.get(s["name"], {}))
    counts = _counts(split, arrays["source"][0], arrays["class"][0], sources, classes)
    summary = {
        "name": name, "store": str(out), "seed": seed, "tile": tile, "block": block,
        "ratios": list(RATIOS), "filter": {"min_valid_fraction": tile_filter.min_valid_fraction,
                                           "drop_constant": tile_filter.drop_constant,
                                           "full_tiles_only": True},
        "classes": classes, "sources": sources, "counts": counts,
        "build_seconds": round(time.time() - t0, 1),
    }
    root.attrs.update({k: v for k, v in summary.items() if k != "store"})
    if catalog_dir is not None:
        write_catalog(summary, Path(catalog_dir))
    return summary


def write_catalog(summary: dict[str, Any], folder: Path) -> Path:
    """``<name>.json`` (everything) and ``<name>.md`` (the counts, readable) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / f"{summary['name']}.json"
    js.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    c = summary["counts"]
    lines = [f"# Dataset `{summary['name']}`", "",
             f"{c['total']} tiles of {summary['tile']} x {summary['tile']} x 3 uint8; seed "
             f"{summary['seed']}; split 8:1:1 (scenes by spatial blocks of {summary['block']} x "
             f"{summary['block']} tiles, classification images stratified per class). Built by "
             f"`geocompress.training.build_dataset`; rules in `geocompress/training/` "
             f"(`radiometry.py`: bands and 16-bit stretch, `sources.py`: tiling and filtering, "
             f"`splits.py`).", "",
             "| split | tiles |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in c["split"].items()]
    lines += ["", "| source | kind | dtype | bands used | train | val | test | dropped |",
              "|---|---|---|---|---|---|---|---|"]
    for s in summary["sources"]:
        n = c["source"][s["name"]]
        lines.append(f"| {s['name']} | {s['kind']} | {s.get('dtype', 'uint8')} | "
                     f"{s.get('bands_used', [1, 2, 3])} | {n['train']} | {n['val']} | {n['test']} | "
                     f"{s.get('dropped') or ''} |")
    if summary["classes"]:
        lines += ["", "| class | train | val | test |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['train']} | {v['val']} | {v['test']} |" for k, v in c["class"].items()]
    md = folder / f"{summary['name']}.md"
    md.write_text("\n".join(lines) + "\n")
    return js
