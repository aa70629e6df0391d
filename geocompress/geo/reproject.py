"""Point and footprint reprojection helpers shared by the grid and STAC code.

Why a module of its own: bbox queries (:mod:`geocompress.geo.grid`) and the
STAC footprint (:mod:`geocompress.store.stac`) need the same careful handling
of CRS transforms -- densified edges (a straight edge in one CRS is curved in
another) and points that do not exist in the target CRS (e.g. space pixels of a
geostationary full disk become ``inf``) -- so it lives in one place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS
from shapely.geometry import MultiPoint, Polygon, box, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

Bbox = tuple[float, float, float, float]


def to_rasterio_crs(crs: Any) -> CRS:
    """Normalise any CRS input (EPSG int, "EPSG:xxxx", WKT, pyproj/rasterio CRS).

    One function for every way of naming a CRS, so callers accept whatever a user gives.

    Args:
        crs: an EPSG code, an ``"AUTH:code"`` string, WKT / PROJ text, or a pyproj / rasterio CRS.

    Returns:
        A rasterio CRS.
    """
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, ProjCRS):
        return CRS.from_wkt(crs.to_wkt())
    if isinstance(crs, int):
        return CRS.from_epsg(crs)
    return CRS.from_user_input(crs)


def transform_points(
    xs: np.ndarray, ys: np.ndarray, src_crs: Any, dst_crs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """Reproject coordinate arrays (x=easting/lon order); failures become ``inf``.

    Args:
        xs: x coordinates.
        ys: y coordinates.
        src_crs: their CRS.
        dst_crs: the target CRS.

    Returns:
        ``(xs, ys)`` in ``dst_crs``; ``inf`` where a point does not exist there.
    """
    src = ProjCRS.from_user_input(to_rasterio_crs(src_crs).to_wkt())
    dst = ProjCRS.from_user_input(to_rasterio_crs(dst_crs).to_wkt())
    tr = Transformer.from_crs(src, dst, always_xy=True)
    ox, oy = tr.transform(np.asarray(xs, float), np.asarray(ys, float), errcheck=False)
    return np.asarray(ox, float), np.asarray(oy, float)


def sample_polygon(poly: Polygon, n_edge: int = 32, n_interior: int = 16) -> np.ndarray:
    """Densified boundary plus an interior grid of points of ``poly`` as (N, 2).

    The interior grid matters when part of the polygon does not exist in the
    target CRS: the boundary alone may then vanish entirely.

    Args:
        poly: the polygon.
        n_edge: the boundary is densified to about ``4 * n_edge`` points.
        n_interior: interior grid points per axis.

    Returns:
        ``N x 2`` points.
    """
    length = poly.exterior.length
    dense = shapely.segmentize(poly, max(length / (4 * n_edge), 1e-12))
    pts = [np.asarray(dense.exterior.coords)]
    if n_interior > 0:
        minx, miny, maxx, maxy = poly.bounds
        gx, gy = np.meshgrid(
            np.linspace(minx, maxx, n_interior), np.linspace(miny, maxy, n_interior)
        )
        grid = np.column_stack([gx.ravel(), gy.ravel()])
        inside = shapely.contains_xy(poly, grid[:, 0], grid[:, 1])
        pts.append(grid[inside])
    return np.concatenate(pts, axis=0)


def reproject_polygon(poly: Polygon, src_crs: Any, dst_crs: Any, n_interior: int = 16) -> Polygon:
    """Reproject a polygon conservatively (convex hull of finite sampled points).

    The convex hull slightly over-covers concave results, which is what a
    tile query wants (never miss a tile). Raises ``ValueError`` when no sampled
    point exists in the target CRS.

    Args:
        poly: the polygon in ``src_crs``.
        src_crs: its CRS.
        dst_crs: the target CRS.
        n_interior: interior grid points per axis.

    Returns:
        The hull in ``dst_crs``.

    Raises:
        ValueError: no sampled point exists in ``dst_crs``.
    """
    pts = sample_polygon(poly, n_interior=n_interior)
    xs, ys = transform_points(pts[:, 0], pts[:, 1], src_crs, dst_crs)
    ok = np.isfinite(xs) & np.isfinite(ys)
    if not ok.any():
        raise ValueError("geometry does not exist in the target CRS (all points failed to transform)")
    hull = MultiPoint(np.column_stack([xs[ok], ys[ok]])).convex_hull
    return hull if isinstance(hull, Polygon) else hull.buffer(0)


def footprint_geojson(geom: BaseGeometry, src_crs: Any, dst_crs: Any = "EPSG:4326",
                      densify: int = 32, tolerance: float | None = None) -> dict:
    """GeoJSON (RFC 7946) footprint of a polygon in ``dst_crs`` (default lon/lat).

    The outline is densified (``densify`` points per edge: straight edges bend in another CRS),
    reprojected with ``rasterio.warp.transform_geom`` (cut at the antimeridian into a
    MultiPolygon), simplified back to the vertices that matter (within ``tolerance`` target
    units, default 1e-5 of the footprint's extent; give about half a pixel: a rectangle in UTM
    then stays 4 corners) and oriented counter-clockwise, as RFC 7946 asks. An outline off the globe (a
    geostationary full disk) falls back to the convex hull of the sampled points that exist.

    Args:
        geom: the footprint in ``src_crs``.
        src_crs: its CRS.
        dst_crs: the target CRS.
        densify: points per edge.
        tolerance: simplification tolerance in target units.

    Returns:
        A GeoJSON geometry dict.
    """
    from rasterio.warp import transform_geom

    parts = list(getattr(geom, "geoms", [geom]))
    dense = shapely.MultiPolygon([shapely.segmentize(p, max(p.exterior.length / (4 * densify), 1e-12))
                                  for p in parts if not p.is_empty])
    out = None
    try:
        g = shape(transform_geom(to_rasterio_crs(src_crs), to_rasterio_crs(dst_crs), mapping(dense),
                                 antimeridian_cutting=True))
        coords = np.asarray(shapely.get_coordinates(g))
        if coords.size and np.isfinite(coords).all() and g.is_valid and not g.is_empty:
            out = g
    except Exception:  # noqa: BLE001 - any GDAL failure -> robust fallback below
        pass
    if out is None:
        out = reproject_polygon(shapely.union_all(parts).convex_hull, src_crs, dst_crs, n_interior=96)
    if tolerance is None:
        minx, miny, maxx, maxy = out.bounds
        tolerance = max(maxx - minx, maxy - miny) * 1e-5
    out = out.simplify(tolerance, preserve_topology=True)
    polys = [orient(p, 1.0) for p in getattr(out, "geoms", [out]) if not p.is_empty]
    return mapping(polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys))


def transform_bbox(bbox: Bbox, src_crs: Any, dst_crs: Any, densify_pts: int = 21) -> Polygon:
    """The region a bbox covers in another CRS, as a polygon there.

    GDAL's ``transform_bounds`` (densified edges, poles and the antimeridian handled) where it
    gives finite bounds; a bbox partly off the target CRS (lon/lat over a geostationary disk's
    space pixels) falls back to the hull of the sampled points that exist there, so a query
    never misses a tile it touches.

    Args:
        bbox: ``(minx, miny, maxx, maxy)`` in ``src_crs``.
        src_crs: its CRS.
        dst_crs: the target CRS.
        densify_pts: points per edge for ``transform_bounds``.

    Returns:
        The region in ``dst_crs``.
    """
    from rasterio.warp import transform_bounds

    try:
        out = transform_bounds(to_rasterio_crs(src_crs), to_rasterio_crs(dst_crs), *bbox,
                               densify_pts=densify_pts)
        if np.isfinite(out).all() and out[0] < out[2] and out[1] < out[3]:
            return box(*out)
    except Exception:  # noqa: BLE001 - GDAL refuses bounds that do not exist there
        pass
    return reproject_polygon(bbox_polygon(bbox), src_crs, dst_crs)


def bbox_polygon(bbox: Bbox) -> Polygon:
    """Validated (minx, miny, maxx, maxy) -> Polygon.

    Args:
        bbox: ``(minx, miny, maxx, maxy)``.

    Returns:
        The box.

    Raises:
        ValueError: non-finite values, or min not below max (a swapped bbox is a user error, not
            an empty query).
    """
    minx, miny, maxx, maxy = (float(v) for v in bbox)
    if not all(np.isfinite([minx, miny, maxx, maxy])):
        raise ValueError(f"bbox has non-finite values: {bbox!r}")
    if minx >= maxx or miny >= maxy:
        raise ValueError(
            f"bbox must be (minx, miny, maxx, maxy) with min < max, got {bbox!r} "
            "(a bbox crossing the antimeridian must be split in two)"
        )
    return box(minx, miny, maxx, maxy)
