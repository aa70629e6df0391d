"""Errors raised when a source scene cannot be compressed.

All derive from :class:`SceneError` (a ``ValueError``) so callers (the CLI) can
catch one type and print the message, which always says what is wrong with
which file and, where possible, how to fix it.
"""

from __future__ import annotations


class SceneError(ValueError):
    """A source raster cannot be used as a geocompress scene."""


class SceneNotFoundError(SceneError):
    """The scene path does not exist."""


class SceneUnreadableError(SceneError):
    """GDAL cannot open the file as a raster."""


class MissingCRSError(SceneError):
    """The raster has no coordinate reference system."""


class EmptyRasterError(SceneError):
    """The raster has zero width or height."""


class UnsupportedDtypeError(SceneError):
    """The raster's data type is not uint8 or uint16."""


class NoBandsError(SceneError):
    """The raster has no bands."""


class SceneStackMismatchError(SceneError):
    """Files given as one band stack do not share one pixel grid / dtype."""


class SceneReadError(SceneError):
    """Reading pixels failed (a truncated or damaged file): names the file and the tile."""


class PaletteError(SceneError):
    """A band is a palette (colour-table) band of class indices: lossy coding would change them."""


class PerBandNodataError(SceneError):
    """The bands have different nodata values, which a store (one validity mask) cannot keep."""
