"""Tests for geocompress.geo: tile grid, scene reading, tile filtering.

Synthetic GeoTIFFs are written to tmp_path; a few checks also read real
scenes from the shared data dir and skip when it is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window
from shapely.geometry import box

from geocompress.geo import (
    EmptyRasterError,
    MissingCRSError,
    NoBandsError,
    SceneNotFoundError,
    SceneReader,
    SceneStackMismatchError,
    SceneUnreadableError,
    TileFilter,
    TileGrid,
    TileStatus,
    UnsupportedDtypeError,
    constant_value,
    open_scene,
    read_tile,
)
from geocompress.geo.source import validate_dataset

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEOCOMPRESS_DATA", REPO.parent / "shared" / "data"))
SCENES = DATA / "scenes"
UTM = CRS.from_epsg(32618)
UTM_TF = Affine(10, 0, 500000, 0, -10, 4500000)


def write_tif(path: Path, data: np.ndarray, crs=UTM, transform=UTM_TF, **kw) -> Path:
    """Write a (C, H, W) array as a GeoTIFF; extra kwargs go to the profile."""
    count, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=count, dtype=data.dtype, transform=transform, **kw)
    if crs is not None:
        profile["crs"] = crs
    colorinterp = profile.pop("colorinterp", None)
    mask = profile.pop("mask", None)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if colorinterp:
                dst.colorinterp = colorinterp
            if mask is not None:
                dst.write_mask(mask.astype(np.uint8) * 255)
    return path


def ramp(count: int, h: int, w: int, dtype="uint8") -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x + 3 * y + 50 * b) % 251 + 1 for b in range(count)]).astype(dtype)


# ---------------------------------------------------------------------------- grid
def test_grid_shape_windows_and_edges():
    g = TileGrid(600, 300, UTM_TF, UTM, tile=256)
    assert g.stride == 256 and (g.n_rows, g.n_cols) == (2, 3) and g.shape == (2, 3)
    assert g.window(1, 2) == Window(512, 256, 256, 256)
    assert g.valid_window(1, 2) == Window(512, 256, 88, 44)
    assert g.valid_window(0, 0) == Window(0, 0, 256, 256)
    assert g.in_scene_pixels(1, 2) == 88 * 44
    assert g.tile_transform(1, 2) == UTM_TF @ Affine.translation(512, 256)
    assert g.tile_transform(1, 2).c == 500000 + 5120
    assert g.bounds == (500000, 4497000, 506000, 4500000)
    assert list(g.indices())[:4] == [(0, 0), (0, 1), (0, 2), (1, 0)]
    with pytest.raises(IndexError):
        g.window(2, 0)
    # exact multiple: no extra edge tile
    assert TileGrid(512, 256, UTM_TF, UTM).shape == (1, 2)
    # smaller than one tile: one padded tile
    assert TileGrid(10, 5, UTM_TF, UTM).shape == (1, 1)
    with pytest.raises(ValueError):
        TileGrid(10, 10, UTM_TF, UTM, tile=8, stride=9)


def test_grid_overlapping_stride_and_tiles_in_window():
    g = TileGrid(600, 256, UTM_TF, UTM, tile=256, stride=128)
    assert g.shape == (1, 4)
    assert g.window(0, 3) == Window(384, 0, 256, 256)
    assert g.valid_window(0, 3).width == 216
    # pixel 300 is covered by tiles starting at 128 and 256
    assert g.tiles_in_window(Window(300, 0, 1, 1)) == (slice(0, 1), slice(1, 3))
    p = TileGrid(600, 300, UTM_TF, UTM)
    assert p.tiles_in_window(Window(250, 10, 10, 10)) == (slice(0, 1), slice(0, 2))
    assert p.tiles_in_window(Window(0, 0, 600, 300)) == (slice(0, 2), slice(0, 3))
    assert p.tiles_in_window(Window(256, 256, 1, 1)) == (slice(1, 2), slice(1, 2))
    rows, cols = p.tiles_in_window(Window(1000, 0, 5, 5))
    assert cols.start == cols.stop  # outside: empty


def test_grid_dict_round_trip_and_hash():
    g = TileGrid(600, 300, UTM_TF, UTM, tile=128, stride=64)
    d = json.loads(json.dumps(g.to_dict()))
    assert d["transform"] == [10, 0, 500000, 0, -10, 4500000]  # affine order
    g2 = TileGrid.from_dict(d)
    assert g2 == g and hash(g2) == hash(g)
    assert TileGrid(5, 5, UTM_TF, UTM, stride=None) == TileGrid(5, 5, UTM_TF, UTM, stride=256)


def test_tiles_in_bbox_other_crs():
    g = TileGrid(1000, 1000, UTM_TF, UTM, tile=256)
    # pixel window cols 300..480, rows 600..700 (inside tile row 2, tile col 1)
    x0, y0 = UTM_TF @ (300, 600)
    x1, y1 = UTM_TF @ (480, 700)
    ll = transform_bounds(UTM, "EPSG:4326", x0, y1, x1, y0, densify_pts=21)
    assert g.tiles_in_bbox(ll, "EPSG:4326") == (slice(2, 3), slice(1, 2))
    win = g.bbox_to_window(ll, "EPSG:4326")
    assert win.col_off <= 300 and win.row_off <= 600
    assert win.col_off + win.width >= 480 and win.row_off + win.height >= 700
    assert win.width < 200 and win.height < 120  # not grossly over-covering
    # same bbox in the scene CRS (default bbox_crs)
    assert g.bbox_to_window((x0, y1, x1, y0)) == Window(300, 600, 180, 100)
    # clipped to the scene
    assert g.bbox_to_window((x0, y1, x1 + 1e6, y0)) == Window(300, 600, 700, 100)


def test_tiles_in_bbox_errors():
    g = TileGrid(1000, 1000, UTM_TF, UTM)
    with pytest.raises(ValueError, match="does not intersect"):
        g.tiles_in_bbox((10.0, 10.0, 11.0, 11.0), "EPSG:4326")
    with pytest.raises(ValueError, match="min < max"):
        g.tiles_in_bbox((5.0, 0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="no CRS"):
        TileGrid(10, 10, UTM_TF, None).bbox_to_window((0, 0, 1, 1), "EPSG:4326")


@pytest.mark.parametrize("world", [(-180, -90, 180, 90), (-179.9, -89.9, 179.9, 89.9),
                                   (-100, 0, 0, 80)])
def test_a_bbox_containing_the_scene_gives_the_whole_scene(world):
    """Issue 36, item 11: the whole world in lon/lat has no meaningful bounds in UTM (they
    collapse onto the zone's central meridian): it gave one column of the scene, or 'does not
    intersect'. It is cut to the scene where it is given, then reprojected."""
    for tf in (UTM_TF, Affine(10, 0, 300000, 0, -10, 4500000)):
        g = TileGrid(200, 150, tf, UTM, tile=64)
        assert g.bbox_to_window(world, "EPSG:4326") == Window(0, 0, 200, 150)
        assert g.tiles_in_bbox(world, "EPSG:4326") == (slice(0, 3), slice(0, 4))


def test_tiles_in_bbox_rotated_transform():
    tf = Affine.translation(300000, 7800000) @ Affine.rotation(30) @ Affine.scale(2, -2)
    g = TileGrid(1200, 1000, tf, UTM, tile=256)
    bbox = (300900.0, 7799000.0, 301300.0, 7799400.0)
    rows, cols = g.tiles_in_bbox(bbox)
    # brute force: tiles whose footprint intersects the bbox
    expected = set()
    target = box(*bbox)
    for r, c in g.indices():
        w = g.window(r, c)
        corners = [tf @ (w.col_off + dc, w.row_off + dr) for dc, dr in ((0, 0), (256, 0), (256, 256), (0, 256))]
        from shapely.geometry import Polygon

        if Polygon(corners).intersects(target):
            expected.add((r, c))
    assert expected
    er = [r for r, _ in expected]
    ec = [c for _, c in expected]
    assert (rows.start, rows.stop) == (min(er), max(er) + 1)
    assert (cols.start, cols.stop) == (min(ec), max(ec) + 1)
    # the footprint/bounds honour the rotation
    minx, miny, maxx, maxy = g.bounds
    assert maxx - minx > 1200 * 2 * np.cos(np.radians(30)) - 1


# ---------------------------------------------------------------------------- scene
def test_open_scene_info(tmp_path):
    p = write_tif(tmp_path / "a.tif", ramp(3, 300, 600), nodata=0)
    s = open_scene(p)
    assert (s.width, s.height, s.count, s.dtype) == (600, 300, 3, "uint8")
    assert s.crs == UTM and s.transform == UTM_TF and s.nodata == 0
    assert s.band_names == ("band_1", "band_2", "band_3")
    assert s.has_mask and s.name == "a" and s.file_size == p.stat().st_size
    assert s.checksum == hashlib.sha256(p.read_bytes()).hexdigest()
    assert s.grid().shape == (2, 3)
    s2 = open_scene(write_tif(tmp_path / "b.tif", ramp(1, 10, 10, "uint16")))
    assert s2.dtype == "uint16" and not s2.has_mask and s2.nodata is None


def test_scene_errors(tmp_path):
    with pytest.raises(SceneNotFoundError, match="not found"):
        open_scene(tmp_path / "nope.tif")
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    with pytest.raises(SceneUnreadableError):
        open_scene(bad)
    with pytest.raises(MissingCRSError, match="gdal_edit.py -a_srs"):
        open_scene(write_tif(tmp_path / "nocrs.tif", ramp(1, 8, 8), crs=None))
    with pytest.raises(UnsupportedDtypeError, match="float32"):
        open_scene(write_tif(tmp_path / "f.tif", ramp(1, 8, 8, "float32")))
    # GDAL cannot even write 0-size / 0-band files: validate a stand-in dataset
    fake = dict(count=1, width=10, height=0, dtypes=("uint8",), crs=UTM)
    with pytest.raises(EmptyRasterError, match="10x0"):
        validate_dataset(SimpleNamespace(**fake), "x.tif")
    with pytest.raises(NoBandsError):
        validate_dataset(SimpleNamespace(**{**fake, "count": 0, "height": 5, "dtypes": ()}), "x.tif")


def test_read_tile_pads_edges_and_marks_invalid(tmp_path):
    data = ramp(3, 300, 600)
    p = write_tif(tmp_path / "a.tif", data)
    s = open_scene(p)
    g = s.grid()
    pixels, valid = read_tile(s, g, 1, 2)
    assert pixels.shape == (3, 256, 256) and pixels.dtype == np.uint8 and valid.shape == (256, 256)
    np.testing.assert_array_equal(pixels[:, :44, :88], data[:, 256:300, 512:600])
    # edge replication outside the scene
    np.testing.assert_array_equal(pixels[:, :44, 88:], np.repeat(data[:, 256:300, 599:600], 168, axis=2))
    np.testing.assert_array_equal(pixels[:, 44:, :88], np.repeat(data[:, 299:300, 512:600], 212, axis=1))
    assert valid[:44, :88].all() and not valid[44:, :].any() and not valid[:, 88:].any()
    # interior tile, band subset, open reader
    with SceneReader(s) as r:
        px, v = r.read_tile(g, 0, 1, bands=[3, 1])
    np.testing.assert_array_equal(px, data[[2, 0], 0:256, 256:512])
    assert v.all()


def test_validity_nodata_across_all_bands(tmp_path):
    data = ramp(3, 64, 64)
    data[:, :10, :] = 0  # all bands nodata -> invalid
    data[0, 20:30, :] = 0  # only band 1 zero -> still valid
    s = open_scene(write_tif(tmp_path / "n.tif", data, nodata=0))
    _, valid = read_tile(s, s.grid(tile=64), 0, 0)
    assert not valid[:10].any() and valid[10:].all()


def test_validity_internal_mask(tmp_path):
    data = ramp(1, 64, 64, "uint16")
    mask = np.ones((64, 64), bool)
    mask[:, 40:] = False
    s = open_scene(write_tif(tmp_path / "m.tif", data, mask=mask))
    assert s.has_mask
    px, valid = read_tile(s, s.grid(tile=64), 0, 0)
    assert px.dtype == np.uint16
    np.testing.assert_array_equal(valid, mask)


def test_validity_alpha_band_kept_as_data(tmp_path):
    data = ramp(4, 64, 64)
    data[3] = 255
    data[3, 50:, :] = 0
    s = open_scene(write_tif(tmp_path / "rgba.tif", data, photometric="RGB", alpha="YES"))
    assert s.count == 4 and s.colorinterp[-1] == "alpha" and s.has_mask
    px, valid = read_tile(s, s.grid(tile=64), 0, 0)
    assert px.shape[0] == 4
    np.testing.assert_array_equal(px, data)
    assert valid[:50].all() and not valid[50:].any()


def test_band_stack(tmp_path):
    d = tmp_path / "LC8"
    d.mkdir()
    a = write_tif(d / "LC8_B4.tif", ramp(1, 40, 50, "uint16"))
    b = write_tif(d / "LC8_B3.tif", ramp(1, 40, 50, "uint16") + 7)
    s = open_scene([a, b])
    assert s.count == 2 and s.band_names == ("LC8_B4", "LC8_B3") and s.name == "LC8" and s.is_stack
    assert s.checksum == hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    px, valid = read_tile(s, s.grid(tile=32), 1, 1)
    np.testing.assert_array_equal(px[1, :8, :18], ramp(1, 40, 50, "uint16")[0, 32:40, 32:50] + 7)
    assert valid[:8, :18].all() and not valid[8:].any()
    other = write_tif(d / "other.tif", ramp(1, 40, 51, "uint16"))
    with pytest.raises(SceneStackMismatchError, match=r"must share .*\(size 51x40 vs 50x40\)"):
        open_scene([a, other])
    shifted = write_tif(d / "shifted.tif", ramp(1, 40, 50, "uint16"),
                        transform=UTM_TF @ Affine.translation(1, 0))
    with pytest.raises(SceneStackMismatchError) as e:  # only the transform differs: named
        open_scene([a, shifted])
    assert "(transform " in str(e.value) and "size" not in str(e.value).split("(", 1)[1]


# ---------------------------------------------------------------------------- filter
def _tile(value_fn, c=3, n=32, dtype=np.uint8):
    return np.stack([value_fn(b) for b in range(c)]).astype(dtype)


def test_filter_dark_water_is_kept():
    rng = np.random.default_rng(0)
    water = rng.integers(0, 4, size=(3, 32, 32)).astype(np.uint8)  # dark but varying, many zeros
    valid = np.ones((32, 32), bool)  # no nodata, no mask
    d = TileFilter().decide(water, valid)
    assert d == (True, "ok") and d.status == TileStatus.WRITTEN
    # all-zero tile without nodata/mask is data: constant, never "nodata"
    zeros = np.zeros((3, 32, 32), np.uint8)
    assert TileFilter().decide(zeros, valid).status == TileStatus.DROPPED_CONSTANT
    assert TileFilter(drop_constant=False).decide(zeros, valid).keep


def test_filter_nodata_and_constant():
    px = np.random.default_rng(1).integers(0, 255, (3, 32, 32)).astype(np.uint8)
    none = np.zeros((32, 32), bool)
    assert TileFilter().decide(px, none) == (False, "nodata")
    assert TileFilter().decide(px, none).status == TileStatus.DROPPED_NODATA
    some = none.copy()
    some[:4] = True  # 12.5% valid
    assert TileFilter().decide(px, some).keep
    assert TileFilter(min_valid_fraction=0.2).decide(px, some).status == TileStatus.DROPPED_NODATA
    # a thin edge tile fully valid inside the scene is not dropped
    assert TileFilter(min_valid_fraction=0.2).decide(px, some, in_scene=4 * 32).keep
    # constant over valid pixels (garbage under the mask does not matter)
    const = px.copy()
    const[0, :4], const[1, :4], const[2, :4] = 10, 20, 30
    assert TileFilter().decide(const, some) == (False, "constant")
    np.testing.assert_array_equal(constant_value(const, some), [10, 20, 30])
    assert constant_value(px, some) is None
    assert [int(s) for s in TileStatus] == [0, 1, 2, 3]


# ---------------------------------------------------------------------------- real data
@pytest.mark.skipif(not SCENES.is_dir(), reason="shared data dir not present")
def test_real_scenes_smoke():
    rgba = open_scene(SCENES / "drone_pix4d_rgba_0.35m.tif")
    assert rgba.count == 4 and rgba.has_mask
    g = rgba.grid()
    px, valid = read_tile(rgba, g, g.n_rows - 1, g.n_cols - 1)
    assert px.shape == (4, 256, 256) and not valid[-1, -1]
    rot = open_scene(SCENES / "umbra_sar_mount_yasur_2000px.tif")
    rg = rot.grid()
    assert rot.transform.b != 0
    cx, cy = rot.transform @ (1000, 1000)
    rows, cols = rg.tiles_in_bbox((cx - 1, cy - 1, cx + 1, cy + 1))
    assert rows.start <= 3 < rows.stop and cols.start <= 3 < cols.stop
    goes = open_scene(SCENES / "goes_fulldisk_rgb.tif")
    assert goes.crs.to_epsg() is None
    r, c = goes.grid().tiles_in_bbox((-80, 0, -70, 10), "EPSG:4326")
    assert r.stop > r.start and c.stop > c.start


@pytest.mark.skipif(not (SCENES / "landsat8_LC81070352015122LGN00").is_dir(), reason="shared data dir not present")
def test_real_band_stack():
    d = SCENES / "landsat8_LC81070352015122LGN00"
    paths = [d / f"LC81070352015122LGN00_B{b}.tif" for b in (4, 3, 2)]
    s = open_scene(paths)
    assert s.count == 3 and s.dtype == "uint16" and s.band_names[0].endswith("_B4")
    g = s.grid()
    px, valid = read_tile(s, g, 3, 3)
    with rasterio.open(paths[1]) as ds:
        np.testing.assert_array_equal(px[1], ds.read(1, window=g.window(3, 3)))
    assert valid.shape == (256, 256)
