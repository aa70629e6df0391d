"""Paths that once returned wrong pixels with exit code 0 (issue 25): each now right, or refused."""

import numpy as np
import pytest
import rasterio

from geocompress.codec.weights import shipped_index
from geocompress.scene import OutputSpec, compress_scene, decompress_scene
from geocompress.scene.mosaic import nudge_off_nodata
from geocompress.store import StoreError, TileStore

from .conftest import natural_tile
from .test_scene import TINY, write_scene


def test_a_constant_tile_at_a_swath_edge_keeps_its_nodata(tmp_path):
    """Saturated valid pixels (255 in every band) beside nodata: stored as constant, and the
    nodata pixels must still come back as nodata."""
    data = natural_tile(128, 128, seed=1)
    data[:, :64, :64] = 255
    data[:, :20, :30] = 0  # nodata corner inside the constant tile
    src = write_scene(tmp_path / "s.tif", data, nodata=0)
    store = tmp_path / "s.zarr"
    r = compress_scene(src, store, **TINY)
    assert r.dropped_constant == 1
    out = decompress_scene(store, tmp_path / "o.tif", processes=False, progress=False,
                           output=OutputSpec(cog=False))
    with rasterio.open(src) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(b.dataset_mask(), a.dataset_mask())
        y = b.read()
    assert (y[:, :20, :30] == 0).all() and (y[:, 20:64, 30:64] == 255).all()
    assert (y[:, :64, :64][:, a_valid := (data[0, :64, :64] != 0)] == 255).all() and a_valid.any()


def test_valid_pixels_never_decode_to_the_nodata_value(tmp_path, shared_data):
    """Dark valid pixels that the lossy decode rounds to exactly the nodata value in every band
    are moved one level off it: the output's mask equals the source's (on this real Landsat crop,
    nodata 0, 23 valid pixels came back as nodata before)."""
    if not shipped_index().get("mgssnet"):
        pytest.skip("no shipped MGSSNet weights in this checkout")
    path = shared_data / "scenes" / "landsat7_etm_RGB.byte.tif"
    if not path.exists():
        pytest.skip(f"{path} not here")
    with rasterio.open(path) as s:
        win = rasterio.windows.Window(0, 0, 512, 512)
        profile = s.profile | {"width": 512, "height": 512, "transform": s.window_transform(win)}
        crop = s.read(window=win)
    src = tmp_path / "crop.tif"
    with rasterio.open(src, "w", **profile) as o:
        o.write(crop)
    kw = {k: v for k, v in TINY.items() if k not in ("arch", "pretrained", "model_config", "tile", "shard")}
    compress_scene(src, tmp_path / "d.zarr", **kw)
    out = decompress_scene(tmp_path / "d.zarr", tmp_path / "d_out.tif", processes=False,
                           progress=False, output=OutputSpec(cog=False))
    with rasterio.open(src) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(b.dataset_mask(), a.dataset_mask())


def test_nudge_moves_every_band_value_of_a_valid_pixel_off_nodata():
    """In every band, not only where all bands hit it: GDAL's per-band masks read a band value
    equal to nodata as missing in that band (a hostile pass found 809 valid band-pixels of a
    2-band scene masked in band 2)."""
    px = np.array([[[0, 0, 5], [255, 0, 0]], [[0, 3, 0], [255, 0, 0]]], np.uint8)  # 2 bands, 2 x 3
    valid = np.array([[True, True, True], [True, False, True]])
    out = nudge_off_nodata(px, valid, 0)
    assert out[:, 0, 0].tolist() == [1, 1] and out[:, 1, 2].tolist() == [1, 1]  # every band hit
    assert out[:, 0, 1].tolist() == [1, 3] and out[:, 0, 2].tolist() == [5, 1]  # one band hit
    assert out[:, 1, 1].tolist() == [0, 0] and out[:, 1, 0].tolist() == [255, 255]  # invalid; other
    assert nudge_off_nodata(np.full((1, 1, 1), 255, np.uint8), np.ones((1, 1), bool), 255)[0, 0, 0] == 254


def test_an_interrupted_store_is_refused_unless_asked_and_then_masked(tmp_path):
    data = natural_tile(192, 192, seed=3)  # no nodata in the source
    src = write_scene(tmp_path / "i.tif", data)
    store = tmp_path / "i.zarr"

    class Stop(Exception):
        pass

    def stop(done):
        raise Stop

    with pytest.raises(Stop):
        compress_scene(src, store, **{**TINY, "shard": 1, "workers": 1}, on_block=stop)
    ts = TileStore.open(store)
    pending = ts.status_counts()["PENDING"]
    assert not ts.is_complete and pending > 0
    with pytest.raises(StoreError, match="incomplete .* --allow-incomplete"):
        decompress_scene(store, tmp_path / "x.tif", processes=False, progress=False)
    with pytest.warns(UserWarning, match="incomplete"):
        out = decompress_scene(store, tmp_path / "x.tif", processes=False, progress=False,
                               output=OutputSpec(cog=False), allow_incomplete=True)
    with rasterio.open(out) as b:
        mask = b.dataset_mask()
    assert (mask == 0).sum() == pending * 64 * 64  # every missing tile masked, nothing else


def test_psnr_of_eq_10_takes_a_black_band():
    from geocompress.metrics import psnr_paper

    x = np.zeros((2, 8, 8), np.uint8)
    x[1] = 200
    y = x.copy()
    y[0, 0, 0], y[1, 0, 0] = 1, 201
    assert np.isfinite(psnr_paper(x, y))  # raised (log of a zero peak) before


def test_decompress_into_a_missing_folder_fails_before_decoding(tmp_path):
    src = write_scene(tmp_path / "m.tif", natural_tile(64, 64, seed=5))
    compress_scene(src, tmp_path / "m.zarr", **TINY)
    with pytest.raises(FileNotFoundError, match="output folder"):
        decompress_scene(tmp_path / "m.zarr", tmp_path / "nope" / "o.tif", processes=False,
                         progress=False)


def test_decompress_output_rules(tmp_path):
    src = write_scene(tmp_path / "r.tif", natural_tile(64, 64, seed=6))
    compress_scene(src, tmp_path / "r.zarr", **TINY)
    kw = dict(processes=False, progress=False)
    out = decompress_scene(tmp_path / "r.zarr", tmp_path / "o.tif", **kw)
    with pytest.raises(FileExistsError, match="--overwrite"):
        decompress_scene(tmp_path / "r.zarr", out, **kw)
    with pytest.raises(ValueError, match="output format"):
        decompress_scene(tmp_path / "r.zarr", tmp_path / "o.xyz", **kw)
    decompress_scene(tmp_path / "r.zarr", out, overwrite=True,
                     output=OutputSpec(creation_options={"COMPRESS": "ZSTD"}), **kw)
    with rasterio.open(out) as o:
        assert o.profile["compress"] == "zstd"


def test_a_truncated_scene_is_a_named_error_and_leaves_no_half_made_store(tmp_path):
    from geocompress.geo.errors import SceneError

    src = write_scene(tmp_path / "t.tif", natural_tile(256, 256, seed=7))
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    store = tmp_path / "t.zarr"
    with pytest.raises(SceneError, match="t.tif"):
        compress_scene(src, store, **TINY)
    assert not store.exists()


def test_decompress_leaves_no_temporaries(tmp_path):
    src = write_scene(tmp_path / "q.tif", natural_tile(64, 64, seed=8))
    compress_scene(src, tmp_path / "q.zarr", **TINY)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".q.tif.abc.partial.tif").write_bytes(b"left by a killed run")
    decompress_scene(tmp_path / "q.zarr", out / "q.tif", processes=False, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["q.tif"]


DKW = dict(processes=False, progress=False, output=OutputSpec(cog=False), precision="float64")


def test_band_selection_keeps_valid_pixels_valid(tmp_path):
    """`-b 2 3` with nodata 0: valid pixels whose *selected* bands decode to 0 (band 1, not
    selected, is bright) must be moved off nodata in the bands written, not only in band 1."""
    data = natural_tile(64, 64, seed=1)
    data[data == 0] = 1
    data[1:, 20:40, 20:40] = 0  # bands 2 and 3 dark, band 1 bright: valid pixels
    src = write_scene(tmp_path / "s.tif", data, nodata=0)
    store = tmp_path / "s.zarr"
    compress_scene(src, store, **TINY, precision="float64")
    full = decompress_scene(store, tmp_path / "full.tif", **DKW)
    part = decompress_scene(store, tmp_path / "b23.tif",
                            **{**DKW, "output": OutputSpec(cog=False, bands=(2, 3))})
    with rasterio.open(full) as f, rasterio.open(part) as p:
        # the case arises (bands 2 and 3 hold 0 at valid pixels), and no valid band value of
        # the full decode is 0 either: every band, not only band 1, is moved off nodata
        assert not (f.read()[:, f.dataset_mask() > 0] == 0).any()
        assert (p.dataset_mask() == 255).all() and (f.dataset_mask() == 255).all()


def test_constant_tile_equal_to_nodata_but_valid_by_mask_stays_valid(tmp_path):
    """nodata 0 *and* an internal mask (GDAL reads the mask): a tile of valid zeros is stored as a
    constant and must not come back as nodata."""
    data = natural_tile(64, 128, seed=2)
    data[data == 0] = 1
    data[:, :, :64] = 0
    mask = np.full((64, 128), 255, np.uint8)
    mask[:10, 64:] = 0
    src = tmp_path / "s.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        write_scene(src, data, nodata=0)
        with rasterio.open(src, "r+") as ds:
            ds.write_mask(mask)
    store = tmp_path / "s.zarr"
    compress_scene(src, store, **TINY, precision="float64")
    assert TileStore.open(store).status().tolist() == [[3, 1]]  # constant, written
    with rasterio.open(decompress_scene(store, tmp_path / "o.tif", **DKW)) as o, rasterio.open(src) as s:
        np.testing.assert_array_equal(o.dataset_mask(), s.dataset_mask())


@pytest.mark.parametrize("halo", [0, 1])
def test_uint16_fill_above_the_data_bit_depth_is_not_an_error(tmp_path, halo):
    """12-bit data with nodata 65535 (a common fill): the bit depth is scanned over valid pixels,
    so the fill must not reach the encoder as an out-of-range value."""
    data = natural_tile(64, 128, dtype=np.uint16, seed=5)
    data[:, :10, :10] = 65535
    data[:, 30:40, 100:110] = 65535  # also inside the neighbour a halo encoder reads
    src = write_scene(tmp_path / "s.tif", data, nodata=65535)
    store = tmp_path / "s.zarr"
    r = compress_scene(src, store, **TINY, precision="float64", halo=halo)
    assert r.bits == 12
    with rasterio.open(decompress_scene(store, tmp_path / "o.tif", **DKW)) as o, rasterio.open(src) as s:
        np.testing.assert_array_equal(o.dataset_mask(), s.dataset_mask())
        assert o.read(masked=True).max() < 4096


def test_a_tile_copied_from_another_store_is_refused(tmp_path):
    """A checksum-valid string from another store with the same weights (1 band) put into a
    3-band store's tile: refused by its header, never broadcast into three bands."""
    from geocompress.geo import TileStatus
    from geocompress.store import StoreIntegrityError

    src3 = write_scene(tmp_path / "s3.tif", natural_tile(128, 128, c=3, seed=1))
    src1 = write_scene(tmp_path / "s1.tif", natural_tile(128, 128, c=1, seed=2))
    compress_scene(src1, tmp_path / "one.zarr", **TINY)
    compress_scene(src3, tmp_path / "three.zarr", **TINY)
    ts = TileStore.open(tmp_path / "three.zarr", "r+")
    i, j = (int(v[0]) for v in np.nonzero(ts.status() == TileStatus.WRITTEN))
    ts._tiles[i:i + 1, j:j + 1] = np.array([[TileStore.open(tmp_path / "one.zarr").read_string(0, 0)]],
                                           dtype=object)
    with pytest.raises(StoreError):
        decompress_scene(tmp_path / "three.zarr", tmp_path / "o.tif", **DKW)
    # the store's digest is the first line of defence; past it (as in an incomplete store) the
    # header check names the tile
    from geocompress.scene.mosaic import decode_region
    from geocompress.scene.mosaic import store_spec
    with pytest.raises(StoreIntegrityError, match="bands 1 .store: 3."):
        decode_region(str(tmp_path / "three.zarr"), (0, 0, 128, 128), store_spec(ts).to_dict())


def test_a_bbox_on_pixel_edges_gives_exactly_those_pixels():
    """Inverse-transform rounding (420.0000000001) must not add a row or column: fine grids in
    degrees are where it shows."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from geocompress.geo.grid import TileGrid

    tf = from_origin(-122.5, 37.8, 0.0001, 0.0001)
    g = TileGrid(3000, 3000, tf, CRS.from_epsg(4326), tile=256)
    rng = np.random.default_rng(1)
    for _ in range(100):
        c0, r0 = (int(v) for v in rng.integers(0, 2000, 2))
        w, h = (int(v) for v in rng.integers(1, 900, 2))
        (x0, y1), (x1, y0) = tf @ (c0, r0), tf @ (c0 + w, r0 + h)
        win = g.bbox_to_window((x0, y0, x1, y1))
        assert (win.col_off, win.row_off, win.width, win.height) == (c0, r0, w, h)


def test_a_12_bit_alpha_comes_back_at_its_own_opaque_value(tmp_path):
    """The alpha band is rebuilt from the stored mask; opaque is the top of the scene's bit
    depth (4095 here), not of uint16 (65535, outside the data's own range)."""
    from rasterio.enums import ColorInterp as CI

    data = natural_tile(64, 64, c=4, dtype=np.uint16, seed=5)
    data[3] = 4095
    data[3, :20] = 0
    src = write_scene(tmp_path / "a.tif", data, colorinterp=[CI.red, CI.green, CI.blue, CI.alpha])
    store = tmp_path / "a.zarr"
    assert compress_scene(src, store, **TINY, precision="float64").bits == 12
    with rasterio.open(decompress_scene(store, tmp_path / "o.tif", **DKW)) as o:
        np.testing.assert_array_equal(o.read(4), data[3])


def test_no_valid_band_value_reads_back_as_that_bands_nodata(tmp_path):
    """GDAL's per-band masks (``read(masked=True)``, rioxarray) of the decoded scene are the
    source's: a valid pixel decoded onto nodata in one band alone is moved off it too."""
    data = natural_tile(96, 96, c=2, seed=4)
    data[0] = np.maximum(data[0], 1)  # no band-pixel of the source at nodata but the strip's
    data[1] = 1 + data[1] % 3  # band 2 dark, values 1..3, with bright stripes: its decoded
    data[1, :, 40:44] = data[1, :, 70:72] = 255  # ringing puts many on 0
    data[:, :16, :] = 0  # a nodata strip in both bands
    src = write_scene(tmp_path / "s.tif", data, nodata=0)
    compress_scene(src, tmp_path / "s.zarr", quality=0.0, tile=64, processes=False,
                   progress=False)  # the shipped default codec, at its lowest rate
    out = decompress_scene(tmp_path / "s.zarr", tmp_path / "o.tif", processes=False,
                           progress=False, output=OutputSpec(cog=False))
    with rasterio.open(src) as a, rasterio.open(out) as b:
        np.testing.assert_array_equal(b.read(masked=True).mask, a.read(masked=True).mask)
        np.testing.assert_array_equal(b.dataset_mask(), a.dataset_mask())


def test_a_band_holding_nodata_where_others_are_valid_is_warned(tmp_path):
    """One mask per scene: band-pixels at the nodata value inside the valid area are coded as
    data and read back as data, said at compress time (silent before)."""
    data = natural_tile(64, 64, c=2, seed=5)
    data[0] = np.maximum(data[0], 1)
    data[1, :, :30] = 0  # band 2's own nodata area, band 1 valid there
    src = write_scene(tmp_path / "s.tif", data, nodata=0)
    with pytest.warns(UserWarning, match=r"band\(s\) 2 hold the nodata value 0 at pixels where "
                                         r"other bands are valid"):
        compress_scene(src, tmp_path / "s.zarr", **TINY)
