"""The STAC Item next to a store: valid-data footprint (RFC 7946), eo / file fields."""

import json

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from shapely.geometry import shape

from geocompress.scene import compress_scene
from geocompress.store.stac import stac_item_path, store_checksum

from .conftest import natural_tile
from .test_scene import TINY, write_scene


def _ring_is_ccw(ring) -> bool:
    xy = np.asarray(ring)
    return float(np.sum(xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1])) > 0


def _item(src, store):
    compress_scene(src, store, **TINY)
    return json.loads(stac_item_path(store).read_text())


def test_a_rectangle_scene_is_four_corners_counter_clockwise(tmp_path):
    src = write_scene(tmp_path / "r.tif", natural_tile(128, 192, seed=1),
                      colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue])
    item = _item(src, tmp_path / "r.zarr")
    g = item["geometry"]
    assert g["type"] == "Polygon" and len(g["coordinates"][0]) == 5  # not 129 vertices
    assert _ring_is_ccw(g["coordinates"][0])
    asset = item["assets"]["zarr"]
    assert [b.get("common_name") for b in asset["eo:bands"]] == ["red", "green", "blue"]
    assert all(b["name"] for b in asset["eo:bands"])
    size, digest = store_checksum(tmp_path / "r.zarr")
    assert asset["file:size"] == size and asset["file:checksum"] == "1220" + digest
    assert any("/file/" in e for e in item["stac_extensions"])
    assert any("/eo/" in e for e in item["stac_extensions"])


def test_the_footprint_follows_the_valid_data_not_the_raster(tmp_path):
    data = natural_tile(256, 256, seed=2)
    data[:, :, 128:] = 0  # the right half is nodata: dropped tiles
    data[:, 100:128, 100:128] = 0  # and a masked corner inside a kept tile
    item = _item(write_scene(tmp_path / "h.tif", data, nodata=0), tmp_path / "h.zarr")
    foot = shape(item["geometry"])
    with rasterio.open(tmp_path / "h.tif") as s:
        from rasterio.warp import transform_geom
        from shapely.geometry import box, mapping

        full = shape(transform_geom(s.crs, "EPSG:4326", mapping(box(*s.bounds))))
        left = shape(transform_geom(s.crs, "EPSG:4326", mapping(box(s.bounds.left, s.bounds.bottom,
                                                                     s.bounds.left + 1280, s.bounds.top))))
    assert 0.45 < foot.area / full.area < 0.52  # about the left half, less the masked corner
    assert foot.intersection(left).area / left.area > 0.98  # every valid pixel is inside


def test_a_scene_across_the_antimeridian_is_split(tmp_path):
    # UTM 60N: x = 833,900 m at the equator is about 180 degrees east
    src = tmp_path / "am.tif"
    data = natural_tile(128, 128, seed=3)
    with rasterio.open(src, "w", driver="GTiff", width=128, height=128, count=3, dtype="uint8",
                       crs=CRS.from_epsg(32660), transform=Affine(20, 0, 832700, 0, -20, 50000)) as d:
        d.write(data)
    item = _item(src, tmp_path / "am.zarr")
    g = item["geometry"]
    assert g["type"] == "MultiPolygon" and len(g["coordinates"]) == 2
    lons = [x for poly in g["coordinates"] for x, _ in poly[0]]
    assert max(lons) <= 180 and min(lons) >= -180 and any(x > 179 for x in lons) and any(x < -179 for x in lons)
    assert all(_ring_is_ccw(poly[0]) for poly in g["coordinates"])


def test_the_footprint_leaves_out_invalid_rows_at_a_padded_edge(tmp_path):
    """A 150 x 120 scene whose last 30 rows are masked: the edge tile's padding (rows 120-127,
    stored valid) must not make the last cell valid, so the footprint stays within one cell of
    the valid data (it reached row 120, 30 rows past it)."""
    data = natural_tile(120, 150, seed=3)
    data[data == 0] = 1
    data[:, 90:, :] = 0
    src = write_scene(tmp_path / "m.tif", data, nodata=0)
    item = _item(src, tmp_path / "m.zarr")
    foot = shape(item["geometry"])
    with rasterio.open(src) as s:
        from rasterio.warp import transform

        (x,), (y,) = transform(s.crs, "EPSG:4326", *[[v] for v in s.xy(115, 75)])
        (x0,), (y0,) = transform(s.crs, "EPSG:4326", *[[v] for v in s.xy(85, 75)])
    from shapely.geometry import Point

    assert foot.covers(Point(x0, y0)) and not foot.covers(Point(x, y))
