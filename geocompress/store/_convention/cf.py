"""CF-style georeferencing, the form rioxarray/GDAL read from Zarr.

A 0-d ``spatial_ref`` variable holds the CRS (``crs_wkt`` and its
``spatial_ref`` alias, plus pyproj's CF grid-mapping parameters) and the
``GeoTransform`` (GDAL order, space-separated: ``c a b f d e``). Data
variables point at it with ``grid_mapping: "spatial_ref"`` and list it in
``coordinates`` so xarray loads it as a coordinate.
"""

from __future__ import annotations

import warnings

from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.crs import CRS

GRID_MAPPING = "spatial_ref"


def geotransform_string(transform: Affine) -> str:
    """GDAL-order GeoTransform as rioxarray writes it (shortest round-trip floats).

    Args:
        transform: the grid's affine transform.

    Returns:
        Six space-separated floats in GDAL order, read back exactly by GDAL and rioxarray.
    """
    return " ".join(repr(float(v)) for v in transform.to_gdal())


def parse_geotransform(text: str) -> Affine:
    """Inverse of :func:`geotransform_string`.

    Args:
        text: a ``GeoTransform`` attribute.

    Returns:
        The affine transform.
    """
    return Affine.from_gdal(*(float(v) for v in text.split()))


def spatial_ref_attrs(crs: CRS, transform: Affine) -> dict:
    """Attributes of the ``spatial_ref`` grid-mapping variable.

    Args:
        crs: the grid's CRS.
        transform: the grid's affine transform.

    Returns:
        CF grid-mapping attributes (where pyproj can derive them), ``crs_wkt`` / ``spatial_ref``
        (WKT2: always, so an exotic CRS still reads) and ``GeoTransform``.
    """
    wkt = crs.to_wkt(version="WKT2_2019")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attrs = dict(ProjCRS.from_wkt(wkt).to_cf())
    except Exception:  # noqa: BLE001 - exotic CRS: WKT alone is enough for readers
        attrs = {}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    attrs["crs_wkt"] = wkt
    attrs["spatial_ref"] = wkt
    attrs["GeoTransform"] = geotransform_string(transform)
    return attrs


def data_var_attrs() -> dict:
    """Attributes linking a data variable to ``spatial_ref``.

    Returns:
        ``grid_mapping`` and ``coordinates``, both naming ``spatial_ref``.
    """
    return {"grid_mapping": GRID_MAPPING, "coordinates": GRID_MAPPING}
