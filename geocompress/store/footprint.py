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


CELL = 16

__all__ = ["CELL", "valid_cells", "valid_footprint"]


def valid_cells(ts, cell: int = CELL) -> np.ndarray:
    """Boolean (ceil(H / cell), ceil(W / cell)) raster: True where some pixel is valid.

    Coarse cells keep the footprint's polygon small while following the valid data.

    Args:
        ts: an open :class:`~geocompress.store.tile_store.TileStore`.
        cell: cell size in pixels; must divide the tile size.

    Returns:
        The cell raster.

    Raises:
        ValueError: ``cell`` does not divide the tile size.
    """
    g = ts.grid
    if g.tile % cell:
        raise ValueError(f"cell {cell} must divide the tile size {g.tile}")
    out = np.zeros((math.ceil(g.height / cell), math.ceil(g.width / cell)), bool)
    n = g.tile // cell
    for rows, cols in ts.shard_blocks():  # a shard block of masks at a time: bounded memory
        valid = ts.read_valid(rows, cols)
        nr, nc = valid.shape[:2]
        # an edge tile's padding beyond the scene is stored valid: it must not make the last
        # cell valid (the footprint then covered invalid pixels more than a cell from data)
        ys = (rows.start + np.arange(nr))[:, None] * g.step + np.arange(g.tile)[None, :]
        xs = (cols.start + np.arange(nc))[:, None] * g.step + np.arange(g.tile)[None, :]
        valid = valid & (ys < g.height)[:, None, :, None] & (xs < g.width)[None, :, None, :]
        small = valid.reshape(nr, nc, n, cell, n, cell).any(axis=(3, 5))
        for i in range(nr):
            for j in range(nc):
                if not small[i, j].any():
                    continue
                cy, cx = (rows.start + i) * g.step // cell, (cols.start + j) * g.step // cell
                view = out[cy:cy + n, cx:cx + n]
                view |= small[i, j][:view.shape[0], :view.shape[1]]
    return out


def valid_footprint(ts, cell: int = CELL) -> BaseGeometry:
    """Polygon / MultiPolygon of the valid data in the scene CRS (empty when nothing is valid).

    Args:
        ts: an open :class:`~geocompress.store.tile_store.TileStore`.
        cell: cell size in pixels (see :func:`valid_cells`).

    Returns:
        The footprint, clipped to the scene's pixel outline.
    """
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
