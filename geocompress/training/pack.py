"""A portable pack of a tile store's training splits: one ``.npz`` of JPEG-coded tiles.

Why: a borrowed GPU machine gets a copy of the repository and a small file beside it, not the
shared data folder nor the Zarr store. JPEG at quality 95 (4:4:4) loses far less than the
distortion the codec is trained at, at a fraction of the tiles' size (figures:
``catalogs/models/mgssnet-training.md``, "Figures moved from docstrings"); the pack records the
quality so a catalog can say what a model was trained on. The test split is never packed: it is
measured on the original pixels.

Layout (no pickles): for each split ``s``: ``s_jpeg`` (all JPEG bytes, uint8), ``s_offsets``
(int64, n + 1), ``s_index`` (the tiles' indices in the source store); ``tile``, ``quality``,
``source`` (the store's name).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from geocompress.atomic import atomic_path

from .tiles import TileDataset, Tiles, evenly_spaced, split_index
from .splits import SPLIT_NAMES


def _jpeg(tile: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(tile.transpose(1, 2, 0))).save(
        buf, "JPEG", quality=quality, subsampling=0, optimize=True)
    return buf.getvalue()


def pack_splits(store: str | os.PathLike, out: str | os.PathLike,
                splits: tuple[str, ...] = ("train", "val"), quality: int = 95,
                limits: dict[str, int] | None = None) -> Path:
    """Write the pack of ``splits`` of ``store`` atomically to ``out``.

    Args:
        store: the Zarr tile store.
        out: the ``.npz`` to write.
        splits: which splits to pack.
        quality: JPEG quality (4:4:4), recorded in the pack.
        limits: per split, at most that many tiles, evenly spaced.

    Returns:
        ``out`` as a path.

    Raises:
        ValueError: ``splits`` includes ``test``, which is measured on original pixels only.
    """
    if "test" in splits:
        raise ValueError("the test split is measured on original pixels: do not pack it")
    arrays: dict[str, np.ndarray] = {}
    tile = 0
    for name in splits:
        ds = TileDataset(store, name, crop=None, augment=False, limit=(limits or {}).get(name))
        tile = ds.tile
        blobs = [_jpeg(ds.pixels(i), quality) for i in range(len(ds))]
        arrays[f"{name}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{name}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        arrays[f"{name}_index"] = np.asarray(ds.indices, dtype=np.int64)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".tmp.npz") as tmp:  # np.savez appends .npz to any other name
        np.savez(tmp, tile=np.int64(tile), quality=np.int64(quality),
                 source=np.array(Path(store).name), **arrays)
    return out


class PackedTiles(Tiles):
    """One split of a pack, decoded into memory once, with :class:`~.tiles.TileDataset`'s crops,
    flips, stretches and ``limit``.

    Args:
        pack: the ``.npz`` (:func:`pack_splits`).
        split, crop, augment, limit, stretch: as :class:`~.tiles.TileDataset`'s.
        cache: accepted for the same signature: a pack is always in memory.

    Raises:
        ValueError: the pack holds no such split, or ``stretch`` is not a probability.
    """

    def __init__(self, pack: str | os.PathLike, split: int | str = "train", crop: int | None = 256,
                 augment: bool | None = None, cache: bool = True, limit: int | None = None,
                 stretch: float = 0.0) -> None:
        self.split = split_index(split)
        name = SPLIT_NAMES[self.split]
        with np.load(pack, allow_pickle=False) as z:
            if f"{name}_jpeg" not in z:
                raise ValueError(f"{pack} holds no {name!r} split")
            data, offsets, index = z[f"{name}_jpeg"], z[f"{name}_offsets"], z[f"{name}_index"]
            self.tile = int(z["tile"])
            self.quality = int(z["quality"])
        keep = evenly_spaced(np.arange(len(index)), limit)
        self.indices = index[keep]
        self._tiles = np.stack([
            np.asarray(Image.open(io.BytesIO(data[offsets[k]:offsets[k + 1]].tobytes())).convert("RGB"))
            .transpose(2, 0, 1) for k in keep]) if len(keep) else np.zeros((0, 3, self.tile, self.tile), np.uint8)
        self._setup(crop, augment, stretch)

    def pixels(self, i: int) -> np.ndarray:
        """Tile ``i`` of the split, as JPEG decoded it.

        Args:
            i: the tile's position in the split.

        Returns:
            A 3 x T x T uint8 array.
        """
        return self._tiles[i]
