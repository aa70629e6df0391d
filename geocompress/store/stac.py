"""A STAC Item describing a geocompress store.

The Item carries the projection extension for the scene pixel grid
(``proj:code`` when an authority code exists else ``proj:wkt2``,
``proj:transform`` in affine order, ``proj:shape`` [height, width],
``proj:bbox`` in the scene CRS), a lon/lat (EPSG:4326) geometry and bbox from
the densified scene outline, and one ``data`` asset pointing at the store
(media type ``application/vnd+zarr``).

:func:`write_stac_item` saves it *next to* the store, as a sibling file
``<store stem>.stac-item.json`` (``out/scene.zarr`` ->
``out/scene.stac-item.json``), with a relative asset href (``./scene.zarr``).
Not inside the store: zarr warns about every non-Zarr object it finds when
listing a group (e.g. on each ``xarray.open_zarr``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pystac
import shapely
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import shape

from geocompress.geo.grid import TileGrid
from geocompress.geo.reproject import footprint_geojson
from geocompress.geo.source import SceneInfo
from geocompress.store._convention.zarr import corner_bbox, crs_code

STAC_SUFFIX = ".stac-item.json"
ZARR_MEDIA_TYPE = "application/vnd+zarr"


def make_stac_item(
    store_path: str | Path,
    scene: SceneInfo,
    grid: TileGrid,
    codec_meta: dict,
    datetime_: datetime | None = None,
) -> pystac.Item:
    """Build (not write) the Item. ``datetime_`` is the acquisition time if
    known; by default the current time is used (GeoTIFFs rarely carry it)."""
    store_path = Path(store_path)
    crs = grid.crs or scene.crs
    geom = footprint_geojson(grid.footprint(), crs, "EPSG:4326")
    bbox = [float(v) for v in shapely.bounds(shape(geom))]
    item = pystac.Item(
        id=store_path.name.removesuffix(".zarr") or scene.name,
        geometry=geom,
        bbox=bbox,
        datetime=datetime_ or datetime.now(timezone.utc),
        properties={
            "geocompress:source": scene.name,
            "geocompress:source_checksum": scene.checksum,
            "geocompress:model": codec_meta.get("model"),
            "geocompress:weights_digest": codec_meta.get("weights_digest"),
            "geocompress:quality": codec_meta.get("quality"),
            "geocompress:tile": grid.tile,
            "geocompress:stride": grid.step,
        },
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    code = crs_code(crs)
    proj.code = code
    if code is None:
        proj.wkt2 = crs.to_wkt(version="WKT2_2019")
    proj.transform = [float(v) for v in grid.transform[:6]]
    proj.shape = [grid.height, grid.width]
    proj.bbox = corner_bbox(grid.transform, grid.height, grid.width)
    item.add_asset(
        "zarr",
        pystac.Asset(
            href=str(store_path.resolve()),
            media_type=ZARR_MEDIA_TYPE,
            roles=["data"],
            title=f"geocompress tile store of {scene.name}",
        ),
    )
    return item


def write_stac_item(
    store_path: str | Path, scene: SceneInfo, grid: TileGrid, codec_meta: dict,
    datetime_: datetime | None = None,
) -> Path:
    """Write the Item next to the store (see module docstring); returns its path."""
    store_path = Path(store_path)
    item = make_stac_item(store_path, scene, grid, codec_meta, datetime_)
    dest = stac_item_path(store_path)
    item.assets["zarr"].href = f"./{store_path.name}"
    item.save_object(include_self_link=False, dest_href=str(dest))
    return dest


def stac_item_path(store_path: str | Path) -> Path:
    """Where :func:`write_stac_item` puts the Item for ``store_path``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + STAC_SUFFIX)
