"""Training: tiled datasets (Zarr), the paper's rate-distortion recipe, lambda tables.

Nothing here is imported by the codec or the scene pipeline; it only uses them (the tile grid and
filter of :mod:`geocompress.geo`, the architectures of :mod:`geocompress.models`, checkpoints of
:mod:`geocompress.codec`).
"""

from geocompress._lazy import lazy_attributes

__all__ = ["EpochSampler", "TileDataset", "open_tiles", "build_dataset", "DatasetRecipe", "SceneSource",
           "discover_scenes", "train"]

# loaded on first use: the data loaders pull in torch, the dataset builder rasterio / dask / zarr,
# the trainer matplotlib and tqdm; `geocompress --help` (whose parser lists `train`) needs none
_LAZY = {"EpochSampler": ".data", "TileDataset": ".tiles", "open_tiles": ".data",
         "build_dataset": ".dataset", "DatasetRecipe": ".dataset", "SceneSource": ".sources",
         "discover_scenes": ".sources", "train": ".trainer"}


__getattr__ = lazy_attributes(__name__, _LAZY)
