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

import dataclasses
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DatasetRecipe:
    """How a dataset is cut and split, and how many workers read it: every setting of
    :func:`build_dataset` besides what goes in and where it goes, as one frozen value.

    Why one value: a dataset's recipe is recorded whole (its store's ``attrs`` and catalog
    entry) and rebuilt the same way by passing it again.

    Attributes:
        seed: the split seed (blocks and stratified images are assigned from it).
        tile: tile side in pixels.
        block: spatial split block, in tiles per side: neighbouring tiles share a split, so the
            test split is not the train split's next-door pixels.
        tile_filter: which scene tiles are kept (default: fully valid, not constant).
        scheduler: a Dask scheduler name (``"threads"``: the reads release the GIL in GDAL;
            ``"sync"`` for debugging) or None to use an active ``distributed.Client``.
        workers: Dask workers (threads) of the default scheduler.
    """

    seed: int = 0
    tile: int = 256
    block: int = 4
    tile_filter: TileFilter = DEFAULT_FILTER
    scheduler: str | None = "threads"
    workers: int = 2

    def replace(self, **changes: Any) -> "DatasetRecipe":
        """A copy with some fields changed.

        Args:
            **changes: field names and their new values.

        Returns:
            A new :class:`DatasetRecipe`.

        Raises:
            TypeError: a name that is no field, listing the known ones.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown dataset option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)


def build_dataset(out: str | os.PathLike, scenes: Sequence[SceneSource | str | os.PathLike] = (),
                  image_folders: Sequence[str | os.PathLike] = (), recipe: DatasetRecipe | None = None,
                  *, name: str | None = None, catalog_dir: str | os.PathLike | None = None,
                  overwrite: bool = False, **options: Any) -> dict[str, Any]:
    """Tile ``scenes`` and ``image_folders`` into a Zarr store at ``out`` (layout: module
    docstring).

    Args:
        out: the store to write.
        scenes: GeoTIFF scenes (paths, or :class:`.sources.SceneSource` for band stacks and
            named dates); overlapping ones share split blocks.
        image_folders: folders of class folders of images (class = sub-folder name).
        recipe: seed, tile, block, filter and workers; default :class:`DatasetRecipe`'s.
        name: the dataset's name (default: the store's stem).
        catalog_dir: where to write ``<name>.json`` and ``.md`` (:func:`write_catalog`); None
            writes no catalog entry.
        overwrite: replace an existing store.
        **options: single fields of ``recipe`` to override (``seed=3, tile=64``).

    Returns:
        The dataset's summary (name, recipe, sources, classes, split counts, build time), also
        kept in the store's ``attrs``.

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false (a rebuilt store would change
            the splits every figure on it was measured on).
        TypeError: an option that is no field of :class:`DatasetRecipe`.
    """
    t0 = time.time()
    recipe = (recipe or DatasetRecipe()).replace(**options)
    out = Path(out)
    name = name or out.name.removesuffix(".zarr")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True to rebuild it")
    root = zarr.open_group(out, mode="w", zarr_format=3)
    writer = _Writer(root, recipe.tile)
    sources, classes, tasks = _plan_reads(scenes, image_folders, recipe)
    dropped: dict[str, Counter] = {}
    for batch in compute_in_waves(tasks, recipe.scheduler, recipe.workers):
        writer.append(batch)
        dropped.setdefault(sources[batch.source]["name"], Counter()).update(batch.dropped)
    split = _assign_splits(writer.meta, sources, classes, recipe.seed)
    arrays = _write_index(root, writer, split)
    for s in sources:
        s["dropped"] = dict(dropped.get(s["name"], {}))
    counts = _counts(split, arrays["source"], arrays["class"], sources, classes)
    f = recipe.tile_filter
    summary = {
        "name": name, "store": str(out), "seed": recipe.seed, "tile": recipe.tile,
        "block": recipe.block, "ratios": list(RATIOS),
        "filter": {"min_valid_fraction": f.min_valid_fraction, "drop_constant": f.drop_constant,
                   "full_tiles_only": True},
        "classes": classes, "sources": sources, "counts": counts,
        "build_seconds": round(time.time() - t0, 1),
    }
    root.attrs.update({k: v for k, v in summary.items() if k != "store"})
    if catalog_dir is not None:
        write_catalog(summary, Path(catalog_dir))
    return summary


def _plan_reads(scenes: Sequence[SceneSource | str | os.PathLike],
                image_folders: Sequence[str | os.PathLike],
                recipe: DatasetRecipe) -> tuple[list[dict[str, Any]], list[str], list]:
    """The sources' descriptions, the class names, and one Dask task per scene block or class
    folder (a wave of them bounds the memory whatever the dataset's size)."""
    sources: list[dict[str, Any]] = []
    classes: list[str] = []
    tasks = []
    scene_list = [s if isinstance(s, SceneSource) else SceneSource.of(s) for s in scenes]
    sites = scene_sites(scene_list)
    for k, src in enumerate(scene_list):
        ref = open_scene(list(scene_list[sites[k]].paths)).transform
        plan = plan_scene(src, tile=recipe.tile, block=recipe.block, reference=ref)
        sources.append({**plan.describe(src), "site": sites[k]})
        j = len(sources) - 1
        for b, tiles in sorted(plan.blocks.items()):
            tasks.append(dask.delayed(read_scene_block)(plan, j, b, tiles, recipe.tile_filter))
    for folder in image_folders:
        folder = Path(folder)
        sources.append({"name": folder.name, "kind": "classification-images", "paths": [str(folder)],
                        "crs_wkt": None, "transform": None,
                        "fit": "centre crop if larger, edge-replication pad if smaller"})
        j = len(sources) - 1
        for cname, files in image_classes(folder).items():
            if cname not in classes:
                classes.append(cname)
            tasks.append(dask.delayed(read_images)(files, j, classes.index(cname), recipe.tile))
    return sources, classes, tasks


def _write_index(root: zarr.Group, writer: _Writer, split: np.ndarray) -> dict[str, np.ndarray]:
    """The per-tile arrays beside ``images`` (source, class, window, block, split); returns them."""
    meta, n = writer.meta, writer.n
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
    return {key: arr for key, (arr, _) in arrays.items()}


def write_catalog(summary: dict[str, Any], folder: Path) -> Path:
    """Write a dataset's catalog entry: ``<name>.json`` (everything) and ``<name>.md`` (the
    counts, readable) in ``folder``.

    Args:
        summary: :func:`build_dataset`'s summary.
        folder: the catalog folder (created if missing).

    Returns:
        The ``.json``'s path.
    """
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
