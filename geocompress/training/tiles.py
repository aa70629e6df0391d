"""One split of a tile source as a PyTorch dataset: the crop / flip / re-stretch logic that every
source shares (:class:`Tiles`), and the Zarr tile store's own source (:class:`TileDataset`).

The shared base lives here, below both :mod:`.data` (which opens and concatenates sources) and
:mod:`.pack` (the ``.npz`` source), so that neither imports the other to reach it.

Augmentation randomness is not drawn from a global RNG: an item addressed as ``(index, seed)``
(see :class:`.data.EpochSampler`) is cropped, flipped and re-stretched by that seed alone, which is
what makes resuming a run exact (see :mod:`.trainer`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from .splits import SPLIT_NAMES

if TYPE_CHECKING:  # pragma: no cover
    import zarr

__all__ = ["STRETCH_GAIN", "STRETCH_LEVEL", "TileDataset", "Tiles", "evenly_spaced", "restretch",
           "split_index"]

STRETCH_GAIN = (0.5, 3.0)  # per-band contrast factor, drawn log-uniformly
STRETCH_LEVEL = (0.1, 0.9)  # where the band's mean lands


def split_index(split: int | str) -> int:
    """The number a store gives a split.

    Args:
        split: a name of :data:`.splits.SPLIT_NAMES` (``"train"``, ``"val"``, ``"test"``) or the
            number itself; both are accepted so that callers can pass what they have.

    Returns:
        The split's number (0 train, 1 val, 2 test).

    Raises:
        ValueError: ``split`` is a string that names no split.
    """
    return SPLIT_NAMES.index(split) if isinstance(split, str) else int(split)


def evenly_spaced(idx: np.ndarray, limit: int | None) -> np.ndarray:
    """At most ``limit`` entries spread evenly over ``idx``.

    Why: a validation set must be cheap and the same at every validation of a run (and across
    runs), so it is a fixed, evenly spread subset rather than a random one.

    Args:
        idx: the candidates, in order.
        limit: how many to keep; None keeps all.

    Returns:
        ``idx`` itself when it is short enough, else ``limit`` of its entries (first and last
        included).
    """
    if limit is not None and len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    return idx


def restretch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` with every band linearly re-stretched and clipped, then the bands shuffled: a
    false-colour or percentile-stretched composite of the same ground.

    Why: Earth-observation users code band combinations and stretches that natural-colour
    training tiles never show (bright, saturated greens of a vegetation composite), and weights
    trained without them decode such composites far worse than anything else (figures in
    ``catalogs/models/mgssnet-training.md``). Each band keeps its structure (a monotone map), so
    the transforms learn to follow it whatever its level and contrast.

    Args:
        x: C x H x W in [0, 1].
        rng: the item's generator (seeded by the sampler, so a resumed run draws the same stretch).

    Returns:
        A C x H x W array in [0, 1]: per band a gain from :data:`STRETCH_GAIN` (log-uniform) about
        its mean, the mean moved to a level in :data:`STRETCH_LEVEL`, then the bands permuted.
    """
    c = x.shape[0]
    gain = np.exp(rng.uniform(*np.log(STRETCH_GAIN), size=(c, 1, 1)))
    level = rng.uniform(*STRETCH_LEVEL, size=(c, 1, 1))
    mean = x.mean(axis=(1, 2), keepdims=True)
    y = np.clip((x - mean) * gain + level, 0.0, 1.0)
    return y[rng.permutation(c)]


class Tiles(Dataset):
    """The crop / flip / re-stretch logic shared by the tile sources.

    Why a base: a Zarr store (:class:`TileDataset`) and a pack (:class:`.pack.PackedTiles`) must
    give a run the same items for the same ``(index, seed)``, so that a run trains alike on either.

    Subclasses set ``indices`` (the split's tiles in their source), ``tile`` (the side) and
    ``split``, implement :meth:`pixels`, and call :meth:`_setup` once those are set. Items are
    float tensors in [0, 1] (3 x crop x crop), addressed by index or by ``(index, augmentation
    seed)``.
    """

    indices: np.ndarray
    tile: int
    split: int

    def _setup(self, crop: int | None, augment: bool | None, stretch: float = 0.0) -> None:
        self.crop = None if crop is None or crop >= self.tile else int(crop)
        self.augment = (self.split == 0) if augment is None else bool(augment)
        if not 0.0 <= stretch <= 1.0:
            raise ValueError(f"stretch is a probability; got {stretch}")
        self.stretch = float(stretch) if self.augment else 0.0

    def __len__(self) -> int:
        return len(self.indices)

    def pixels(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        """Tile ``i`` of the split as stored.

        Args:
            i: position in the split (0 .. len - 1), not the index in the source.

        Returns:
            3 x T x T uint8.

        Raises:
            NotImplementedError: always, here; each source implements it.
        """
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        i, seed = key if isinstance(key, tuple) else (key, None)
        x = self.pixels(int(i))
        if self.augment:
            rng = np.random.default_rng(seed)
            if self.crop:
                r, c = rng.integers(0, self.tile - self.crop + 1, size=2)
                x = x[:, r:r + self.crop, c:c + self.crop]
            if rng.random() < 0.5:
                x = x[:, :, ::-1]
            if rng.random() < 0.5:
                x = x[:, ::-1, :]
            if self.stretch and rng.random() < self.stretch:
                return torch.from_numpy(restretch(x / 255.0, rng)).float()
        elif self.crop:
            o = (self.tile - self.crop) // 2
            x = x[:, o:o + self.crop, o:o + self.crop]
        return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)


class TileDataset(Tiles):
    """Tiles of one split of a Zarr tile store as float tensors in [0, 1] (3 x crop x crop).

    Args:
        store: the store's path, or its opened group.
        split: ``"train"``, ``"val"``, ``"test"`` or its number.
        crop: side of the crop; None (or the tile size) gives the full tile.
        augment: random crop position, horizontal and vertical flips, and with probability
            ``stretch`` a random per-band stretch (:func:`restretch`); otherwise the centre
            ``crop``. Default: on for the train split only.
        cache: load the split into memory once (about 200 kB per tile), which keeps the training
            loop off the disk.
        limit: keep ``limit`` tiles evenly spaced over the split (a fixed, cheap validation set).
        stretch: probability of the re-stretch (only when augmenting).

    Raises:
        ValueError: ``stretch`` is not a probability, or ``split`` names no split.
    """

    def __init__(self, store: "str | os.PathLike | zarr.Group", split: int | str = "train",
                 crop: int | None = 256, augment: bool | None = None, cache: bool = True,
                 limit: int | None = None, stretch: float = 0.0) -> None:
        import zarr  # here, not at module level: a packed dataset trains without zarr

        self.root = store if isinstance(store, zarr.Group) else zarr.open_group(store, mode="r")
        self.split = split_index(split)
        self.indices = evenly_spaced(np.flatnonzero(self.root["split"][:] == self.split), limit)
        self.tile = int(self.root["images"].shape[-1])
        self._setup(crop, augment, stretch)
        idx = self.indices
        self._cache = self.root["images"].get_orthogonal_selection((idx,)) if cache and len(idx) else None

    def pixels(self, i: int) -> np.ndarray:
        """Tile ``i`` of the split as stored.

        Args:
            i: position in the split (0 .. len - 1), not the index in the store.

        Returns:
            3 x T x T uint8, from memory when cached, else read from the store.
        """
        if self._cache is not None:
            return self._cache[i]
        return self.root["images"][int(self.indices[i])]

    def all_pixels(self) -> np.ndarray:
        """Every tile of the split as stored, in split order (for passes over all of them, such
        as computing latents once).

        Returns:
            N x 3 x T x T uint8 (the cache itself where the split is cached: do not modify it).
        """
        if self._cache is not None:
            return self._cache
        return self.root["images"].get_orthogonal_selection((self.indices,))
