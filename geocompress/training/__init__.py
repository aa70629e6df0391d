"""Training: tiled datasets (Zarr), the paper's rate-distortion recipe, lambda tables.

Nothing here is imported by the codec or the scene pipeline; it only uses them (the tile grid and
filter of :mod:`geocompress.geo`, the architectures of :mod:`geocompress.models`, checkpoints of
:mod:`geocompress.codec`).
"""

from .data import EpochSampler, TileDataset
from .dataset import build_dataset
from .sources import SceneSource, discover_scenes

__all__ = ["EpochSampler", "TileDataset", "build_dataset", "SceneSource", "discover_scenes",
           "train"]


def __getattr__(name: str):  # the trainer pulls in matplotlib / tqdm: load it on first use
    if name == "train":
        from .trainer import train

        return train
    raise AttributeError(name)
