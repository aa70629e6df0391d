"""GeoZarr-direction Zarr conventions: ``proj:`` (geo-proj) and ``spatial:``.

Written on the root group they describe the **scene pixel grid** (what the
store decodes to): ``proj:code`` when an authority code is known, else
``proj:wkt2`` (one of the two, never both), ``spatial:dimensions`` ``["y", "x"]``, ``spatial:transform``
(affine order a, b, c, d, e, f), ``spatial:shape`` ``[height, width]``,
``spatial:bbox`` (minx, miny, maxx, maxy in the CRS) and
``spatial:registration`` ``"pixel"``. The conventions are declared in
``zarr_conventions`` with the registrations ``zarr-cm`` publishes (the tests validate the
stored attributes with it).

Per-tile arrays (one cell per tile) override ``spatial:transform`` /
``spatial:shape`` / ``spatial:bbox`` at array level with the tile-index grid,
as the conventions' group-to-array inheritance allows.
"""

from __future__ import annotations

import re

import zarr_cm
from affine import Affine
from rasterio.crs import CRS

# the conventions' registrations as published, from zarr-cm (their maintained implementation):
# proj v0.1 (formerly geo-proj) and spatial, with the exact schema / spec URLs their schemas require
PROJ_CONVENTION = dict(zarr_cm.proj.CMO)
SPATIAL_CONVENTION = dict(zarr_cm.spatial.CMO)
_CODE = re.compile(r"^[A-Z]+:[0-9]+$")


def crs_code(crs: CRS) -> str | None:
    """``"AUTH:code"`` (e.g. ``"EPSG:32618"``) when the CRS has one, else None.

    Args:
        crs: any CRS.

    Returns:
        The code, or None when it has none (or one the convention's pattern rejects).
    """
    try:
        auth = crs.to_authority()
    except Exception:  # noqa: BLE001
        auth = None
    if not auth:
        return None
    code = f"{auth[0].upper()}:{auth[1]}"
    return code if _CODE.match(code) else None


def corner_bbox(transform: Affine, height: int, width: int) -> list[float]:
    """Bounds of the 4 grid corners (correct for rotated transforms).

    Args:
        transform: the grid's affine transform.
        height: rows.
        width: columns.

    Returns:
        ``[xmin, ymin, xmax, ymax]`` in the grid's CRS.
    """
    xs, ys = zip(*(transform @ (c, r) for c, r in ((0, 0), (width, 0), (0, height), (width, height))))
    return [float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys))]


def spatial_attrs(transform: Affine, height: int, width: int) -> dict:
    """``spatial:`` attributes of a (height, width) grid.

    Args:
        transform: the grid's affine transform.
        height: rows.
        width: columns.

    Returns:
        The ``spatial:`` convention's dimensions, transform, shape, bbox and registration.
    """
    return {
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": [float(v) for v in transform[:6]],
        "spatial:shape": [int(height), int(width)],
        "spatial:bbox": corner_bbox(transform, height, width),
        "spatial:registration": "pixel",
    }


def proj_attrs(crs: CRS) -> dict:
    """``proj:`` attributes of a CRS: exactly one of ``proj:code`` (when an authority code
    round-trips) and ``proj:wkt2``, as the convention asks; the full WKT2 is always in the CF
    ``spatial_ref`` variable too.

    Args:
        crs: the grid's CRS.

    Returns:
        ``{"proj:code": ...}`` or ``{"proj:wkt2": ...}``.
    """
    code = crs_code(crs)
    return {"proj:code": code} if code else {"proj:wkt2": crs.to_wkt(version="WKT2_2019")}


def group_attrs(crs: CRS, transform: Affine, height: int, width: int) -> dict:
    """All convention attributes for the root group (scene pixel grid).

    Args:
        crs: the scene's CRS.
        transform: the scene's pixel transform.
        height: scene rows.
        width: scene columns.

    Returns:
        ``zarr_conventions`` plus the ``proj:`` and ``spatial:`` attributes.
    """
    return {
        "zarr_conventions": [PROJ_CONVENTION, SPATIAL_CONVENTION],
        **proj_attrs(crs),
        **spatial_attrs(transform, height, width),
    }


def read_crs(attrs: dict) -> CRS | None:
    """CRS from ``proj:`` attributes (WKT2 preferred over the code).

    Args:
        attrs: a group's or array's attributes.

    Returns:
        The CRS, or None when neither attribute is present.
    """
    if attrs.get("proj:wkt2"):
        return CRS.from_wkt(attrs["proj:wkt2"])
    if attrs.get("proj:code"):
        return CRS.from_user_input(attrs["proj:code"])
    return None


def read_transform(attrs: dict) -> Affine | None:
    """Affine from ``spatial:transform``.

    Args:
        attrs: a group's or array's attributes.

    Returns:
        The transform, or None when absent.
    """
    t = attrs.get("spatial:transform")
    return None if t is None else Affine(*t[:6])
