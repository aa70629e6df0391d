"""Zarr v3 storage of codec tile strings with georeferencing (see LAYOUT.md).

Imports only :mod:`geocompress.geo` (never torch, models or codec): the store
holds opaque, self-describing ``bytes`` per tile.
"""

from geocompress.store.errors import (
    StoreError,
    StoreIntegrityError,
    StoreMismatchError,
    StoreVersionError,
)
from geocompress.store.tile_store import FORMAT_VERSION, StoreLayout, TileStore

__all__ = ["FORMAT_VERSION", "StoreError", "StoreIntegrityError", "StoreMismatchError",
           "StoreLayout", "StoreVersionError", "TileStore"]
