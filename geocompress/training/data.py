"""PyTorch view of a tile store (Zarr) or of a portable pack of it (``.npz``, :mod:`.pack`):
random crops and flips (and, optionally, random per-band stretches: :func:`restretch`) for
training, centre crops for evaluation.

Augmentation randomness is not drawn from a global RNG: :class:`EpochSampler` hands every item a
seed derived from (sampler seed, epoch, position), so a batch's pixels depend only on where the
run is, which is what makes resuming a run exact (see :mod:`.trainer`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .splits import SPLIT_NAMES

if TYPE_CHECKING:  # pragma: no cover
    import zarr


def split_index(split: int | str) -> int:
    return SPLIT_NAMES.index(split) if isinstance(split, str) else int(split)


def evenly_spaced(idx: np.ndarray, limit: int | None) -> np.ndarray:
    """``limit`` entries spread evenly over ``idx`` (a fixed, cheap validation set)."""
    if limit is not None and len(idx) > limit:
        idx = idx[np.linspace(0, len(idx) - 1, limit).round().astype(int)]
    return idx


STRETCH_GAIN = (0.5, 3.0)  # per-band contrast factor, drawn log-uniformly
STRETCH_LEVEL = (0.1, 0.9)  # where the band's mean lands


def restretch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``x`` (C x H x W in [0, 1]) with every band linearly re-stretched and clipped, then the
    bands shuffled: a false-colour or percentile-stretched composite of the same ground.

    Why: Earth-observation users code band combinations and stretches that natural-colour
    training tiles never show (bright, saturated greens of a vegetation composite), and weights
    trained without them decode such composites far worse than anything else (figures in
    ``catalogs/models/mgssnet-training.md``). Each band keeps its structure (a monotone map), so
    the transforms learn to follow it whatever its level and contrast.
    """
    c = x.shape[0]
    gain = np.exp(rng.uniform(*np.log(STRETCH_GAIN), size=(c, 1, 1)))
    level = rng.uniform(*STRETCH_LEVEL, size=(c, 1, 1))
    mean = x.mean(axis=(1, 2), keepdims=True)
    y = np.clip((x - mean) * gain + level, 0.0, 1.0)
    return y[rng.permutation(c)]


class _Tiles(Dataset):
    """Crop / flip logic shared by the tile sources; subclasses set ``indices``, ``tile``,
    ``split`` and implement :meth:`pixels`."""

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


class TileDataset(_Tiles):
    """Tiles of one split of a Zarr tile store as float tensors in [0, 1] (3 x crop x crop).

    ``augment`` (default: on for train): random crop position, horizontal and vertical flips,
    and with probability ``stretch`` a random per-band stretch (:func:`restretch`). Otherwise
    the centre ``crop`` (or the full tile when ``crop`` is None). ``cache`` loads the split into
    memory once (about 200 kB per tile), which keeps the training loop off the disk.
    ``limit`` keeps ``limit`` tiles evenly spaced over the split (a fixed, cheap validation set).
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
        """Tile ``i`` of the split as stored (3 x T x T uint8)."""
        if self._cache is not None:
            return self._cache[i]
        return self.root["images"][int(self.indices[i])]


class ConcatTiles(Dataset):
    """The tiles of several sources one after the other, each repeated ``repeat`` times (a small
    dataset of imagery that matters weighs more than its tile count); items are addressed like
    a single source's, ``(index, augmentation seed)``."""

    def __init__(self, parts: list[tuple[_Tiles, int]]) -> None:
        self.parts = [p for p, r in parts for _ in range(int(r))]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        i, seed = key if isinstance(key, tuple) else (key, None)
        k = int(np.searchsorted(self.offsets, int(i), side="right")) - 1
        local = int(i) - int(self.offsets[k])
        return self.parts[k][(local, seed) if seed is not None else local]


def parse_source(spec: "str | os.PathLike") -> tuple[str, int]:
    """``"store.zarr*3"`` -> (``"store.zarr"``, 3); a plain path repeats once."""
    text = str(spec)
    head, sep, tail = text.rpartition("*")
    if sep and tail.isdigit() and int(tail) >= 1:
        return head, int(tail)
    return text, 1


def open_tiles(dataset: "str | os.PathLike | list", split: int | str = "train", **kw):
    """The tiles of ``split`` from a Zarr tile store or a ``.npz`` pack (:mod:`.pack`), or, for a
    list of them, their concatenation (:class:`ConcatTiles`; ``"PATH*K"`` repeats one ``K``
    times in the train split, once elsewhere)."""
    if isinstance(dataset, (list, tuple)):
        parts = []
        for spec in dataset:
            path, repeat = parse_source(spec)
            parts.append((open_tiles(path, split, **kw), repeat if split in ("train", 0) else 1))
        return ConcatTiles(parts)
    if str(dataset).endswith(".npz"):
        from .pack import PackedTiles

        return PackedTiles(dataset, split, **kw)
    return TileDataset(dataset, split, **kw)


class EpochSampler(Sampler):
    """Shuffled ``(index, augmentation seed)`` pairs, reproducible from (seed, epoch, position).

    ``set_epoch(e, start)`` begins epoch ``e`` at item ``start``: a resumed run continues with
    exactly the items (and augmentations) the interrupted one would have drawn.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed = int(n), int(seed)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n)
        seeds = rng.integers(0, 2 ** 63 - 1, size=self.n)
        for pos in range(self.start, self.n):
            yield int(order[pos]), int(seeds[pos])
