"""Tiles coded with a halo of neighbour context (issue 26): regions decode to crops of the whole."""

import numpy as np
import pytest
import rasterio

from geocompress.scene import compress_scene, decompress_scene, store_info
from geocompress.store import TileStore

from .conftest import natural_tile
from .test_scene import TINY, write_scene


@pytest.fixture(scope="module")
def halo_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("halo")
    data = natural_tile(192, 256, seed=12)
    data[:, :64, :64] = 0  # a dropped (nodata) neighbour
    src = write_scene(tmp / "s.tif", data, nodata=0)
    store = tmp / "h.zarr"
    compress_scene(src, store, **TINY, halo=1, precision="float64")
    return src, store


def test_a_window_decode_equals_the_crop_of_the_full_decode(halo_store, tmp_path):
    src, store = halo_store
    kw = dict(processes=False, progress=False, cog=False, precision="float64")
    full = decompress_scene(store, tmp_path / "full.tif", **kw)
    win = decompress_scene(store, tmp_path / "win.tif", window=(40, 70, 150, 100), **kw)
    with rasterio.open(full) as f, rasterio.open(win) as w:
        np.testing.assert_array_equal(w.read(), f.read()[:, 70:170, 40:190])
        np.testing.assert_array_equal(w.dataset_mask(), f.dataset_mask()[70:170, 40:190])
    with rasterio.open(src) as a, rasterio.open(full) as f:
        np.testing.assert_array_equal(f.dataset_mask(), a.dataset_mask())


def test_the_halo_is_a_stored_setting(halo_store, tmp_path):
    src, store = halo_store
    assert store_info(store)["halo"] == 1
    ts = TileStore.open(store)
    from geocompress.codec import TileCodec

    assert TileCodec.header(ts.read_string(1, 1)).halo == 1
    with pytest.raises(Exception, match="halo"):
        compress_scene(src, store, **TINY, halo=0)  # resuming with another halo is refused
