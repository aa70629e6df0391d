"""Tile sources of a training dataset: GeoTIFF scenes (tiled on Dask) and classification folders.

Scenes use the scene pipeline's :class:`~geocompress.geo.TileGrid` (256 x 256, no overlap) and
:class:`~geocompress.geo.TileFilter`. For training only tiles fully inside the scene are used
(edge tiles would be part edge-replication padding) and, by default, only fully valid ones
(``min_valid_fraction=1.0``: a tile touching nodata / an alpha-masked border is dropped, as are
constant tiles). One Dask task reads one spatial block of ``block x block`` tiles through its own
:class:`~geocompress.geo.SceneReader` (rasterio handles are not thread-safe), so the block is also
the unit of the spatial split.

Classification images (class = folder name) smaller than the tile are padded by edge
replication (the codec pads the same way; UC Merced has a few 256 x 247 images), larger ones are
centre-cropped.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import dask
import numpy as np
from affine import Affine
from PIL import Image

from geocompress.geo import SceneInfo, SceneReader, TileFilter, TileGrid, open_scene

from .radiometry import Stretch, band_selection, overview_stretch, to_rgb8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class TileBatch:
    """Tiles read by one task: pixels (K x 3 x T x T uint8) and per-tile metadata."""

    source: int
    pixels: np.ndarray
    windows: list[tuple[int, int]]          # (row_off, col_off) in source pixels
    block: int = -1                         # spatial block id within the source, -1 for images
    klass: list[int] = field(default_factory=list)  # class index per tile, -1 for scenes
    names: list[str] = field(default_factory=list)  # item names (for stratified splits)
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SceneSource:
    """One scene (a file or a band stack) and how its pixels become 8-bit RGB."""

    paths: tuple[Path, ...]
    name: str

    @classmethod
    def of(cls, path: str | os.PathLike | Sequence[str | os.PathLike],
           name: str | None = None) -> "SceneSource":
        """A source from one file or from a band stack's files.

        Args:
            path: a GeoTIFF, or the files of a band stack in band order.
            name: the dataset's name for it; default the file's stem or the stack's folder name.

        Returns:
            The source.
        """
        paths = (Path(path),) if isinstance(path, (str, os.PathLike)) else tuple(map(Path, path))
        default = paths[0].stem if len(paths) == 1 else paths[0].parent.name
        return cls(paths, name or default)


def landsat_stack_order(files: Sequence[Path]) -> list[Path]:
    """Order single-band files of a folder: ``..._B4, _B3, _B2`` (true colour) when present,
    otherwise by name.

    Args:
        files: the folder's single-band files.

    Returns:
        The files in stack order.
    """
    by_band = {}
    for f in files:
        m = re.search(r"_B(\d+)$", f.stem, re.IGNORECASE)
        if m:
            by_band[int(m.group(1))] = f
    if all(b in by_band for b in (4, 3, 2)):
        return [by_band[4], by_band[3], by_band[2]]
    return sorted(files)


def discover_scenes(folder: str | os.PathLike) -> list[SceneSource]:
    """Every ``*.tif`` of ``folder`` is a scene; every sub-folder of ``*.tif`` files a band
    stack (see :func:`landsat_stack_order`).

    Args:
        folder: a folder of scenes.

    Returns:
        The sources, files first, then stacks, each sorted by name.
    """
    folder = Path(folder)
    out = [SceneSource.of(p) for p in sorted(folder.glob("*.tif")) + sorted(folder.glob("*.tiff"))]
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.tif")) + sorted(sub.glob("*.tiff"))
        if files:
            out.append(SceneSource.of(landsat_stack_order(files), name=sub.name))
    return out


@dataclass(frozen=True)
class ScenePlan:
    """What to read from a scene: its grid, bands, stretch and the blocks of full tiles."""

    info: SceneInfo
    grid: TileGrid
    bands: list[int]
    stretch: Stretch | None
    blocks: dict[int, list[tuple[int, int]]]  # block id -> (row, col) tiles

    def describe(self, source: SceneSource) -> dict[str, Any]:
        """What the dataset's catalog records about a scene: where it came from and its georeferencing,
        so a tile can be traced back to its ground.

        Args:
            source: the scene this plan is of.

        Returns:
            A JSON-safe dict.
        """
        return {
            "name": source.name, "kind": "scene",
            "paths": [str(p) for p in source.paths],
            "crs_wkt": self.info.crs.to_wkt() if self.info.crs is not None else None,
            "transform": [float(v) for v in self.info.transform[:6]],
            "width": self.info.width, "height": self.info.height,
            "count": self.info.count, "dtype": self.info.dtype,
            "bands_used": self.bands,
            "stretch": self.stretch.to_dict() if self.stretch is not None else None,
            "grid_tiles": list(self.grid.shape),
        }


def plan_scene(source: SceneSource, tile: int = 256, block: int = 4,
               reference: Affine | None = None) -> ScenePlan:
    """Grid and spatial blocks of the tiles fully inside the scene; stretch for 16-bit data.

    Blocks are ``block x block`` tiles of the ``reference`` pixel grid (default: the scene's
    own), found from each tile's centre: scenes of one site (overlapping footprints, e.g. two
    dates of one NAIP quarter quad) share a reference so that the same ground falls in the same
    block, and so in the same split. Block ids are ``block_row * 100000 + block_col``.

    Args:
        source: the scene.
        tile: tile size in pixels.
        block: tiles per spatial block side.
        reference: the site's shared pixel grid; default the scene's own.

    Returns:
        The plan.
    """
    info = open_scene(list(source.paths) if len(source.paths) > 1 else source.paths[0])
    grid = info.grid(tile=tile)
    bands = band_selection(info.count)
    stretch = overview_stretch(info, bands) if info.dtype != "uint8" else None
    to_ref = ~(reference if reference is not None else info.transform) @ info.transform
    size = block * tile
    blocks: dict[int, list[tuple[int, int]]] = {}
    for r in range(info.height // tile):
        for c in range(info.width // tile):
            x, y = to_ref @ ((c + 0.5) * tile, (r + 0.5) * tile)
            key = int(y // size) * 100000 + int(x // size)
            blocks.setdefault(key, []).append((r, c))
    return ScenePlan(info, grid, bands, stretch, blocks)


def scene_sites(sources: Sequence[SceneSource]) -> list[int]:
    """Site of each scene: the index of the first scene it is connected to by overlapping
    footprints in the same CRS (scenes in different CRSs are never grouped).

    Args:
        sources: the scenes.

    Returns:
        One site index per scene.
    """
    infos = [open_scene(list(s.paths) if len(s.paths) > 1 else s.paths[0]) for s in sources]
    polys = [i.grid().footprint() for i in infos]
    site = list(range(len(sources)))

    def find(i: int) -> int:
        while site[i] != i:
            i = site[i]
        return i

    for i in range(len(sources)):
        for j in range(i):
            if infos[i].crs == infos[j].crs and polys[i].intersection(polys[j]).area > 0:
                a, b = find(i), find(j)
                site[max(a, b)] = min(a, b)
    return [find(i) for i in range(len(sources))]


def read_scene_block(plan: ScenePlan, source_index: int, block_id: int, tiles: list[tuple[int, int]],
                     tile_filter: TileFilter) -> TileBatch:
    """Read, filter and convert one block (a Dask task: opens its own reader).

    Args:
        plan: the scene's plan.
        source_index: the scene's index in the dataset.
        block_id: the spatial block.
        tiles: the block's ``(row, col)`` tiles.
        tile_filter: which tiles to drop (nodata, constant).

    Returns:
        The kept tiles as 8-bit RGB, their windows and the drop counts.
    """
    kept, windows = [], []
    dropped: dict[str, int] = {}
    with SceneReader(plan.info) as reader:
        for r, c in tiles:
            pixels, valid = reader.read_tile(plan.grid, r, c)
            decision = tile_filter.decide(pixels, valid, plan.grid.in_scene_pixels(r, c))
            if not decision.keep:
                dropped[decision.reason] = dropped.get(decision.reason, 0) + 1
                continue
            rgb = to_rgb8(pixels, plan.bands, plan.stretch)
            if rgb.min() == rgb.max():  # constant after the stretch (saturated): nothing to learn
                dropped["constant"] = dropped.get("constant", 0) + 1
                continue
            kept.append(rgb)
            w = plan.grid.window(r, c)
            windows.append((int(w.row_off), int(w.col_off)))
    t = plan.grid.tile
    px = np.stack(kept) if kept else np.zeros((0, 3, t, t), np.uint8)
    return TileBatch(source_index, px, windows, block=block_id, klass=[-1] * len(kept),
                     dropped=dropped)


def fit_tile(img: np.ndarray, tile: int) -> tuple[np.ndarray, tuple[int, int]]:
    """H x W x C -> 3 x tile x tile: centre crop if larger, edge-replicate pad if smaller.
    Returns the tile and the (row_off, col_off) of the crop in the image (0 when padded).

    Args:
        img: an image, ``H x W`` or ``H x W x C``.
        tile: the tile size.

    Returns:
        The tile and the crop offset.
    """
    if img.ndim == 2:
        img = img[:, :, None]
    img = img[:, :, [b - 1 for b in band_selection(img.shape[2])]]
    h, w = img.shape[:2]
    r0, c0 = max(0, (h - tile) // 2), max(0, (w - tile) // 2)
    img = img[r0:r0 + tile, c0:c0 + tile]
    h, w = img.shape[:2]
    if (h, w) != (tile, tile):
        img = np.pad(img, ((0, tile - h), (0, tile - w), (0, 0)), mode="edge")
    return np.ascontiguousarray(img.transpose(2, 0, 1)), (r0, c0)


def read_images(paths: list[Path], source_index: int, klass: int, tile: int) -> TileBatch:
    """Read classification images of one class (a Dask task).

    Args:
        paths: the class's image files.
        source_index: the class folder's index in the dataset.
        klass: the class label.
        tile: the tile size.

    Returns:
        The images as tiles (:func:`fit_tile`), their windows and names.

    Raises:
        ValueError: an image that is not 8-bit (its scale would be a guess).
    """
    tiles, windows, names = [], [], []
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("RGB", "L") else im)
        if arr.dtype != np.uint8:
            raise ValueError(f"{p}: only 8-bit classification images are supported")
        t, win = fit_tile(arr, tile)
        tiles.append(t)
        windows.append(win)
        names.append(p.name)
    px = np.stack(tiles) if tiles else np.zeros((0, 3, tile, tile), np.uint8)
    return TileBatch(source_index, px, windows, klass=[klass] * len(tiles), names=names)


def image_classes(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """Class name -> image files, for a folder of class folders.

    Args:
        folder: a folder of class folders.

    Returns:
        Class name -> sorted image files; class folders without images are left out.
    """
    folder = Path(folder)
    out = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[sub.name] = files
    return out


def compute_in_waves(tasks: list[Any], scheduler: str, workers: int, wave: int = 32
                     ) -> Iterator[TileBatch]:
    """Compute delayed tasks a wave at a time (bounded memory), yielding results in task order.

    Args:
        tasks: Dask delayed tasks.
        scheduler: Dask scheduler name.
        workers: worker count.
        wave: tasks computed at once.

    Yields:
        Each task's result.
    """
    for i in range(0, len(tasks), wave):
        yield from dask.compute(*tasks[i:i + wave], scheduler=scheduler, num_workers=workers)
