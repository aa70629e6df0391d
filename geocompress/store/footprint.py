"""Where a store holds valid pixels, as a polygon in the scene's CRS (the STAC Item's geometry).

From the stored bookkeeping, never from decoded values: written and constant tiles count with
their stored masks, dropped (nodata) and pending tiles do not. The masks are reduced to cells of
``cell`` x ``cell`` pixels (a cell is valid when any of its pixels is), polygonized with
``rasterio.features.shapes`` and clipped to the scene, so the footprint covers every valid pixel
and over-covers by less than one cell; a scene that is valid everywhere is its exact rectangle.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from shapely import affinity
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from geocompress.geo.status import TileStatus

from .masks import decode_mask

CELL = 16

__all__ = ["CELL", "valid_cells", "valid_footprint"]


def valid_cells(ts, cell: int = CELL) -> np.ndarray:
    """Boolean (ceil(H / cell), ceil(W / cell)) raster: True where some pixel is valid."""
    g = ts.grid
    if g.tile % cell:
        raise ValueError(f"cell {cell} must divide the tile size {g.tile}")
    out = np.zeros((math.ceil(g.height / cell), math.ceil(g.width / cell)), bool)
    status = ts.status()
    keep = np.isin(status, (TileStatus.WRITTEN, TileStatus.DROPPED_CONSTANT))
    if not keep.any():
        return out
    masks = ts.read_masks()
    n = g.tile // cell
    for r, c in zip(*np.nonzero(keep)):
        blob = bytes(masks[r, c])
        y0, x0 = r * g.step, c * g.step
        if blob:
            m = decode_mask(blob, (g.tile, g.tile)).reshape(n, cell, n, cell).any(axis=(1, 3))
        else:
            m = np.ones((n, n), bool)
        cy, cx = y0 // cell, x0 // cell
        view = out[cy:cy + n, cx:cx + n]
        view |= m[:view.shape[0], :view.shape[1]]
    return out


def valid_footprint(ts, cell: int = CELL) -> BaseGeometry:
    """Polygon / MultiPolygon of the valid data in the scene CRS (empty when nothing is valid)."""
    g = ts.grid
    cells = valid_cells(ts, cell)
    if not cells.any():
        return shapely.Polygon()
    if cells.all():
        return g.footprint()
    to_pixels = Affine.scale(cell)
    parts = [shape(geom) for geom, v in shapes(cells.astype(np.uint8), mask=cells,
                                               transform=to_pixels, connectivity=4) if v]
    pix = shapely.union_all(parts).intersection(g.pixel_polygon())
    a, b, c, d, e, f = g.transform[:6]
    return affinity.affine_transform(pix, [a, b, d, e, c, f]).simplify(0)
