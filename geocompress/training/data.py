"""PyTorch view of a tile store (Zarr) or of a portable pack of it (``.npz``, :mod:`.pack`):
random crops and flips (and, optionally, random per-band stretches: :func:`restretch`) for
training, centre crops for evaluation. One source's tiles: :mod:`.tiles`; here: opening one or
several sources (:func:`open_tiles`) and the order a run draws them in (:class:`EpochSampler`).

Augmentation randomness is not drawn from a global RNG: :class:`EpochSampler` hands every item a
seed derived from (sampler seed, epoch, position), so a batch's pixels depend only on where the
run is, which is what makes resuming a run exact (see :mod:`.trainer`).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

# one source's tiles; TileDataset and restretch also answer here, where users and tests know them
from .tiles import TileDataset, Tiles, restretch

__all__ = ["ConcatTiles", "EpochSampler", "TileDataset", "Tiles", "open_tiles", "parse_source",
           "restretch"]


class ConcatTiles(Dataset):
    """The tiles of several sources one after the other, each repeated ``repeat`` times (a small
    dataset of imagery that matters weighs more than its tile count); items are addressed like
    a single source's, ``(index, augmentation seed)``.

    Args:
        parts: (source, repeat) pairs, in order.
    """

    def __init__(self, parts: list[tuple[Tiles, int]]) -> None:
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
    """A source as the CLI and pipelines name it: ``"store.zarr*3"`` weighs a store three times.

    Args:
        spec: a path, optionally followed by ``*K`` (K >= 1).

    Returns:
        (path, K); a plain path repeats once.
    """
    text = str(spec)
    head, sep, tail = text.rpartition("*")
    if sep and tail.isdigit() and int(tail) >= 1:
        return head, int(tail)
    return text, 1


def open_tiles(dataset: "str | os.PathLike | list", split: int | str = "train", **kw):
    """The tiles of ``split`` from a Zarr tile store or a ``.npz`` pack (:mod:`.pack`), or, for a
    list of them, their concatenation (:class:`ConcatTiles`; ``"PATH*K"`` repeats one ``K``
    times in the train split, once elsewhere).

    Args:
        dataset: a store or pack path, or a list of them (``"PATH*K"`` allowed).
        split: ``"train"``, ``"val"``, ``"test"`` or its number.
        **kw: :class:`~.tiles.TileDataset`'s options (crop, augment, cache, limit, stretch).

    Returns:
        A dataset of [0, 1] tensors addressed by index or ``(index, augmentation seed)``.

    Raises:
        ValueError: a pack without that split, or a ``stretch`` that is no probability.
    """
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

    Args:
        n: the number of items (the train split's length).
        seed: the run's seed.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed = int(n), int(seed)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Where the next iteration starts, so that a resumed run continues mid-epoch with the
        same order.

        Args:
            epoch: the epoch (seeds its permutation).
            start: the position in that epoch's order to start from.
        """
        self.epoch, self.start = int(epoch), int(start)

    def __len__(self) -> int:
        return self.n - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n)
        seeds = rng.integers(0, 2 ** 63 - 1, size=self.n)
        for pos in range(self.start, self.n):
            yield int(order[pos]), int(seeds[pos])
