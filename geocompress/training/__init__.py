"""Training: tiled datasets (Zarr), the paper's rate-distortion recipe, lambda tables.

Nothing here is imported by the codec or the scene pipeline; it only uses them (the tile grid and
filter of :mod:`geocompress.geo`, the architectures of :mod:`geocompress.models`, checkpoints of
:mod:`geocompress.codec`).
"""

from .data import EpochSampler, TileDataset, open_tiles

__all__ = ["EpochSampler", "TileDataset", "open_tiles", "build_dataset", "SceneSource",
           "discover_scenes", "train"]

# loaded on first use: the dataset builder pulls in rasterio / dask / zarr, the trainer matplotlib
# and tqdm; a GPU box that only trains from a pack (.npz) needs none of the former
_LAZY = {"build_dataset": ".dataset", "SceneSource": ".sources", "discover_scenes": ".sources",
         "train": ".trainer"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
