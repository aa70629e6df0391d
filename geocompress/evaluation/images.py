"""Evaluation image sets: a folder of images, a split of a tile-dataset Zarr, or GeoTIFF scenes.

Every loader returns an :class:`ImageSet` of :class:`EvalImage` (``C x H x W`` uint8 / uint16, the
layout of :class:`geocompress.codec.TileCodec`) with a unique, stable ``name``: the name is the key
of the resumable result caches, so it must not depend on load order or on the machine.

* **Folder**: ``*.png|jpg|tif...`` directly inside it, or class sub-folders (the sub-folder name is
  the label, as in UC Merced / NWPU-RESISC45). ``split="train"|"val"|"test"`` keeps a
  deterministic per-class share: the same assignment as :mod:`geocompress.training.splits` uses
  when it builds a dataset from that folder (seed, folder name, class and file names only), so a
  folder evaluated here and a dataset built from it agree on what is test.
* **Zarr** (``geocompress.training.build_dataset`` layout): ``images`` N x 3 x T x T, ``split``,
  ``class``, ``source`` and the ``classes`` / ``sources`` attributes. Prefer this over the folder
  when the learned codecs were trained on that dataset: its split is the one they never saw.
* **Scenes**: 256 x 256 full tiles of each GeoTIFF (kept by :class:`geocompress.geo.TileFilter`:
  all pixels valid, not constant), native dtype, 3 bands (1 for single-band scenes). uint16 tiles
  carry the scene's significant bits so that PSNR's fixed peak and the learned codec's scaling use
  the sensor's range, not 65535.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geocompress.training.splits import assign_stratified

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test")

__all__ = [
    "IMAGE_SUFFIXES",
    "EvalImage",
    "ImageSet",
    "load_folder",
    "load_images",
    "load_scenes",
    "load_zarr",
    "split_names",
]


@dataclass(frozen=True)
class EvalImage:
    """One evaluation image: its pixels, its stable name (the key of every result cache) and label.

    Attributes:
        name: unique and stable across machines and load orders.
        pixels: C x H x W, uint8 or uint16 (the layout of :class:`geocompress.codec.TileCodec`).
        label: the class name, or None for unlabelled images (scene tiles).
        bits: significant bits (None: the dtype's, 8 or 16), so PSNR's peak and the learned
            codec's scaling follow the sensor's range, not 65535.
    """

    name: str
    pixels: np.ndarray  # C x H x W, uint8 or uint16
    label: str | None = None
    bits: int | None = None

    @property
    def peak(self) -> float:
        """Fixed PSNR peak, ``2**bits - 1`` (255 for 8-bit).

        Returns:
            The peak as a float.
        """
        b = self.bits if self.bits is not None else 8 * self.pixels.dtype.itemsize
        return float(2 ** b - 1)

    @property
    def hwc(self) -> np.ndarray:
        """The pixels as H x W x C, the layout of the classical codecs.

        Returns:
            A C-contiguous copy.
        """
        return np.ascontiguousarray(np.moveaxis(self.pixels, 0, -1))


@dataclass
class ImageSet:
    """Named images plus where they came from (written into the report).

    Attributes:
        name: short name, used in figure titles.
        images: the images, in a stable order.
        description: where they came from (folder, dataset split, scenes), for the README.
        classes: class names in the dataset's order (empty for unlabelled sets).
    """

    name: str
    images: list[EvalImage]
    description: str = ""
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[EvalImage]:
        return iter(self.images)

    def __getitem__(self, i: int) -> EvalImage:
        return self.images[i]

    def by_name(self, name: str) -> EvalImage:
        """The image of that name (the report's ``visual_image``).

        Args:
            name: an :attr:`EvalImage.name`.

        Returns:
            The image.

        Raises:
            KeyError: no image of that name.
        """
        for im in self.images:
            if im.name == name:
                return im
        raise KeyError(f"no image {name!r} in {self.name}")

    def labelled(self) -> bool:
        """Whether classification can use this set: not empty and every image labelled.

        Returns:
            True when every image has a label.
        """
        return bool(self.images) and all(im.label is not None for im in self.images)

    def limit(self, n: int | None) -> ImageSet:
        """At most ``n`` images, spread evenly over the set (so every class keeps some): quick looks
        that still see the whole set.

        Args:
            n: the most images to keep (None: all).

        Returns:
            This set when it is small enough, else a new one whose description says what was kept.
        """
        if n is None or n >= len(self.images):
            return self
        idx = np.linspace(0, len(self.images) - 1, n).round().astype(int)
        return ImageSet(self.name, [self.images[i] for i in idx],
                        f"{self.description}; {n} of {len(self.images)} images, evenly spaced",
                        self.classes)


# -------------------------------------------------------------------------------------------- split

def split_names(names: Sequence[str], group: str, seed: int = 0,
                ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> list[str]:
    """Split ("train" / "val" / "test") of each name of one class, stratified and seeded.

    The very assignment the dataset builder uses
    (:func:`geocompress.training.splits.assign_stratified`), so a folder evaluated here and a
    dataset built from it agree on which images are test images.

    Args:
        names: the file names of one class (their order does not matter).
        group: the class's key (folder and class name), which seeds its shuffle apart from the
            other classes'.
        seed: the dataset seed.
        ratios: train / val / test shares; val and test get ``round(share * n)`` each.

    Returns:
        The split of each name, in the order of ``names``.
    """
    return [SPLITS[c] for c in assign_stratified(list(names), group, seed, ratios)]


# ------------------------------------------------------------------------------------------- folder

def _read_image(path: Path) -> np.ndarray:
    """C x H x W uint8/uint16 with 1 or 3 bands (RGBA / palette images become RGB)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio

        with rasterio.open(path) as ds:
            a = ds.read()
        a = a[:3] if a.shape[0] >= 3 else a[:1]
    else:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "L", "RGB"):
                a = np.asarray(im)
            else:
                a = np.asarray(im.convert("RGB"))
        a = a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)
    if a.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: {a.dtype} images are not supported (uint8 / uint16 only)")
    return np.ascontiguousarray(a)


def _fit(a: np.ndarray, tile: int | None) -> np.ndarray:
    """Centre crop / edge-pad to ``tile`` (as the dataset builder does); None keeps the size."""
    if tile is None:
        return a
    _, h, w = a.shape
    r0, c0 = max(0, (h - tile) // 2), max(0, (w - tile) // 2)
    a = a[:, r0:r0 + tile, c0:c0 + tile]
    _, h, w = a.shape
    if (h, w) != (tile, tile):
        a = np.pad(a, ((0, 0), (0, tile - h), (0, tile - w)), mode="edge")
    return np.ascontiguousarray(a)


def load_folder(folder: str | os.PathLike, split: str | None = None, seed: int = 0,
                tile: int | None = None) -> ImageSet:
    """Images of ``folder`` (flat, or one sub-folder per class); see the module docstring.

    Args:
        folder: the folder; class sub-folders name the labels (UC Merced / NWPU-RESISC45 layout).
        split: ``"train"``, ``"val"`` or ``"test"``: that stratified share of each class, as the
            dataset builder assigns it (None: every image).
        seed: the split's seed.
        tile: centre-crop / edge-pad every image to ``tile`` x ``tile`` (None: native sizes).

    Returns:
        The images, named ``<class>/<file stem>`` (flat folders: the stem).

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: it holds no images, ``split`` is unknown, or an image is not uint8 / uint16.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    groups: dict[str | None, list[Path]] = {}
    for sub in subs:
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            groups[sub.name] = files
    flat = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if flat and not groups:
        groups[None] = flat
    if not groups:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images: list[EvalImage] = []
    for label, files in groups.items():
        if split is not None:
            assigned = split_names([f.name for f in files], f"{folder.name}/{label or ''}", seed)
            files = [f for f, s in zip(files, assigned) if s == split]
        for f in files:
            name = f"{label}/{f.stem}" if label is not None else f.stem
            images.append(EvalImage(name, _fit(_read_image(f), tile), label))
    classes = [g for g in groups if g is not None]
    desc = (f"folder {folder}" + (f", {split} split (seed {seed}, stratified per class)" if split else "")
            + (f", centre {tile} x {tile}" if tile else ""))
    return ImageSet(folder.name + (f"-{split}" if split else ""), images, desc, classes)


# --------------------------------------------------------------------------------------------- zarr

def load_zarr(store: str | os.PathLike, split: str | None = "test", source: str | None = None,
              limit: int | None = None) -> ImageSet:
    """Tiles of one ``split`` of a tile dataset, optionally of one ``source`` only.

    Prefer this over the source folder when the learned codecs were trained on the dataset: its
    test split is the one they never saw.

    Args:
        store: the dataset's Zarr folder (``geocompress.training.build_dataset`` layout).
        split: ``"train"``, ``"val"``, ``"test"`` (default) or None for all tiles.
        source: only tiles of this source (e.g. ``"ucmerced"``).
        limit: at most that many tiles, evenly spaced.

    Returns:
        The tiles, named ``<source>/<class or 'scene'>/<tile index in the store>``, labelled with
        their class name (None for scene tiles).

    Raises:
        ValueError: an unknown split or source.
    """
    import zarr

    root = zarr.open_group(str(store), mode="r")
    attrs = dict(root.attrs)
    sources = [s["name"] for s in attrs.get("sources", [])]
    classes = list(attrs.get("classes", []))
    src = root["source"][:]
    cls = root["class"][:]
    keep = np.ones(len(src), dtype=bool)
    if split is not None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        keep &= root["split"][:] == SPLITS.index(split)
    if source is not None:
        if source not in sources:
            raise ValueError(f"no source {source!r} in {store}; sources: {sources}")
        keep &= src == sources.index(source)
    idx = np.flatnonzero(keep)
    if limit is not None and len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    pixels = root["images"].get_orthogonal_selection((idx,)) if len(idx) else []
    images = []
    for k, i in enumerate(idx):
        label = classes[int(cls[i])] if int(cls[i]) >= 0 else None
        sname = sources[int(src[i])] if sources else "tile"
        images.append(EvalImage(f"{sname}/{label or 'scene'}/{int(i)}", np.asarray(pixels[k]), label))
    used = sorted({im.label for im in images if im.label is not None}, key=classes.index)
    name = str(attrs.get("name", Path(store).stem)) + (f"-{source}" if source else "") + (f"-{split}" if split else "")
    desc = (f"tile dataset {store} (`{attrs.get('name', '?')}`, seed {attrs.get('seed', '?')}), "
            f"{split or 'all'} split" + (f", source {source}" if source else ""))
    return ImageSet(name, images, desc, used)


# ------------------------------------------------------------------------------------------- scenes

def load_scenes(paths: Sequence[str | os.PathLike], tile: int = 256, per_scene: int | None = None
                ) -> ImageSet:
    """Full, valid, non-constant ``tile`` x ``tile`` tiles of each GeoTIFF scene (first 3 bands, or 1).

    Only whole valid tiles, so nodata and borders do not enter the rate or the quality.
    16-bit scenes carry their significant bits (from the largest value) for PSNR's peak.

    Args:
        paths: the scenes.
        tile: tile size in pixels.
        per_scene: at most that many tiles per scene, evenly spaced over its grid (None: all).

    Returns:
        Unlabelled tiles named ``<scene>/r<row>c<col>``.

    Raises:
        ValueError: a scene is neither uint8 nor uint16.
    """
    from geocompress.geo import SceneReader, TileFilter, open_scene

    flt = TileFilter(min_valid_fraction=1.0, drop_constant=True)
    images: list[EvalImage] = []
    for p in paths:
        info = open_scene(p)
        grid = info.grid(tile=tile)
        bands = [1, 2, 3] if info.count >= 3 else [1]
        cells = [(r, c) for r, c in grid.indices()
                 if grid.valid_window(r, c).height == tile and grid.valid_window(r, c).width == tile]
        kept: list[tuple[int, int, np.ndarray]] = []
        with SceneReader(info) as reader:
            for r, c in cells:
                px, valid = reader.read_tile(grid, r, c, bands)
                if flt.decide(px, valid).keep:
                    kept.append((r, c, px))
        if per_scene is not None and len(kept) > per_scene:
            sel = np.linspace(0, len(kept) - 1, per_scene).round().astype(int)
            kept = [kept[i] for i in sel]
        bits = None
        if kept and kept[0][2].dtype == np.uint16:
            top = max(int(px.max()) for _, _, px in kept)
            bits = max(8, int(math.ceil(math.log2(top + 1))))
        for r, c, px in kept:
            if px.dtype not in (np.uint8, np.uint16):
                raise ValueError(f"{info.name}: {px.dtype} scenes are not supported (uint8 / uint16)")
            images.append(EvalImage(f"{info.name}/r{r}c{c}", px, None, bits))
    desc = f"{len(paths)} scene(s), full valid {tile} x {tile} tiles" + (
        f", at most {per_scene} per scene" if per_scene else "")
    return ImageSet("scenes", images, desc)


# ------------------------------------------------------------------------------------------ dispatch

def load_images(spec: str | os.PathLike | Sequence[str | os.PathLike], split: str | None = None,
                source: str | None = None, limit: int | None = None, seed: int = 0) -> ImageSet:
    """Any of the loaders, chosen from the path: what ``geocompress evaluate --images`` takes.

    Args:
        spec: a ``*.zarr`` folder (:func:`load_zarr`), GeoTIFF file(s) (:func:`load_scenes`) or a
            folder of images (:func:`load_folder`).
        split: the split to keep (Zarr: default ``"test"``; folders: all images unless given).
        source: Zarr only: one source's tiles.
        limit: at most that many images, evenly spaced.
        seed: folders only: the split's seed.

    Returns:
        The image set.

    Raises:
        ValueError: nothing given, or a path that is none of the three.
        FileNotFoundError: a GeoTIFF or folder that does not exist.
    """
    paths = [Path(spec)] if isinstance(spec, (str, os.PathLike)) else [Path(p) for p in spec]
    if not paths:
        raise ValueError("no image source given")
    first = paths[0]
    if first.is_dir() and (first.suffix == ".zarr" or (first / "zarr.json").exists()):
        return load_zarr(first, split=split or "test", source=source, limit=limit)
    if first.is_dir():
        return load_folder(first, split=split, seed=seed).limit(limit)
    if all(p.suffix.lower() in (".tif", ".tiff") for p in paths):
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(f"scene(s) not found: {missing}")
        return load_scenes(paths).limit(limit)
    raise ValueError(f"cannot tell what {first} is: give a folder of images, a tile-dataset "
                     f".zarr or GeoTIFF scene(s)")
