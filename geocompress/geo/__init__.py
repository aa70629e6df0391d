"""Georeferencing layer: tile grids, scene reading and tile filtering.

This package knows about rasters, CRSs and pixel windows, and nothing about
the learned codec (it must not import torch, ``geocompress.models`` or
``geocompress.codec``), so it can be used and tested without a model.
"""

from geocompress.geo.errors import (
    EmptyRasterError,
    MissingCRSError,
    NoBandsError,
    SceneError,
    SceneNotFoundError,
    SceneStackMismatchError,
    SceneUnreadableError,
    UnsupportedDtypeError,
)
from geocompress.geo.grid import TileGrid
from geocompress.geo.source import SceneInfo, SceneReader, open_scene, read_tile
from geocompress.geo.tile_filter import Decision, TileFilter, TileStatus, constant_value

__all__ = [
    "Decision",
    "EmptyRasterError",
    "MissingCRSError",
    "NoBandsError",
    "SceneError",
    "SceneInfo",
    "SceneNotFoundError",
    "SceneReader",
    "SceneStackMismatchError",
    "SceneUnreadableError",
    "TileFilter",
    "TileGrid",
    "TileStatus",
    "UnsupportedDtypeError",
    "constant_value",
    "open_scene",
    "read_tile",
]
