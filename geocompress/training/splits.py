"""Deterministic train / val / test assignment (0 / 1 / 2) from a seed.

* Scene tiles are assigned by **spatial block** (``block x block`` tiles of one scene go to one
  split together) so that neighbouring tiles, which share content across their common edge, do
  not leak between training and evaluation. Blocks are shuffled by the seed and dealt greedily to
  the split furthest below its target share of *tiles* (blocks hold different numbers of kept
  tiles), which hits 8:1:1 in tiles as closely as whole blocks allow.
* Classification images are split **per class** (stratified): each class's images, shuffled by
  the seed and the class name, give round(10 %) to val, round(10 %) to test, the rest to train.

Only the seed, the names and the counts enter the assignment, so rebuilding a dataset with the
same seed gives the same splits on any machine.
"""

from __future__ import annotations

import zlib
from typing import Hashable, Sequence

import numpy as np

SPLIT_NAMES = ("train", "val", "test")

TRAIN, VAL, TEST = 0, 1, 2
RATIOS = (0.8, 0.1, 0.1)


def _rng(seed: int, *keys: str) -> np.random.Generator:
    return np.random.default_rng([int(seed)] + [zlib.crc32(k.encode()) for k in keys])


def assign_blocks(sizes: dict[Hashable, int], seed: int, ratios: Sequence[float] = RATIOS
                  ) -> dict[Hashable, int]:
    """Split of each spatial block, given the number of kept tiles in each block.

    Why blocks: neighbouring tiles look alike, so they must share a split, or the test split
    measures the train split's next-door pixels.

    Args:
        sizes: kept tiles per block key.
        seed: the split seed (same seed and sizes: same assignment on every machine).
        ratios: train / val / test shares.

    Returns:
        Block key -> split (0 train, 1 val, 2 test).
    """
    keys = sorted(sizes, key=str)
    order = _rng(seed, "blocks").permutation(len(keys))
    counts = np.zeros(3)
    out: dict[Hashable, int] = {}
    target = np.asarray(ratios, dtype=np.float64)
    for i in order:
        k = keys[i]
        n = sizes[k]
        if n == 0:
            out[k] = TRAIN
            continue
        total = counts.sum() + n
        deficit = target * total - counts
        s = int(np.argmax(deficit))  # ties go to the lower split (train first)
        out[k] = s
        counts[s] += n
    return out


def assign_stratified(names: Sequence[str], group: str, seed: int,
                      ratios: Sequence[float] = RATIOS) -> list[int]:
    """Split of each item of one class, in the order of ``names`` (stratified: every class keeps
    the ratios).

    Args:
        names: the items' names (the assignment depends on them, not on listing order).
        group: the class's key (source / class), seeding its own draw.
        seed: the split seed.
        ratios: train / val / test shares.

    Returns:
        One split (0 train, 1 val, 2 test) per name.
    """
    n = len(names)
    n_val, n_test = int(round(ratios[1] * n)), int(round(ratios[2] * n))
    order = np.argsort(np.asarray(names, dtype=object), kind="stable")
    perm = order[_rng(seed, "class", group).permutation(n)]
    split = np.full(n, TRAIN, dtype=np.int64)
    split[perm[:n_val]] = VAL
    split[perm[n_val:n_val + n_test]] = TEST
    return split.tolist()
