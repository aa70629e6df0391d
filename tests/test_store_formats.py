"""Store format 3 keeps masks as a boolean Zarr array; format 2 stores still decode the same."""

import numpy as np
import rasterio
import zarr

from geocompress.scene import OutputSpec, compress_scene, decompress_scene
from geocompress.store import TileStore
from geocompress.store.tile_store import FORMAT_VERSION

from .conftest import natural_tile
from .test_scene import TINY, write_scene


def _scene(tmp_path):
    data = natural_tile(128, 192, seed=9)
    data[:, :40, :50] = 0   # nodata inside a kept tile: a partial mask
    data[:, 64:, 128:] = 0  # a whole tile of nodata: dropped
    return write_scene(tmp_path / "f.tif", data, nodata=0)


def test_masks_are_a_boolean_array_any_zarr_client_reads(tmp_path):
    src = _scene(tmp_path)
    compress_scene(src, tmp_path / "f.zarr", **TINY)
    assert FORMAT_VERSION == 3 and TileStore.open(tmp_path / "f.zarr").meta["format_version"] == 3
    masks = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")["masks"]
    assert masks.dtype == np.bool_ and masks.shape == (2, 3, 64, 64)
    m = masks[...]
    with rasterio.open(src) as s:
        want = s.dataset_mask() > 0
    # tile (r, c) covers pixels [64 r, 64 r + 64) x [64 c, 64 c + 64)
    got = m.transpose(0, 2, 1, 3).reshape(128, 192)
    np.testing.assert_array_equal(got, want)
    assert not m[1, 2].any()  # the dropped tile is all False


def test_a_format_2_store_decodes_to_the_same_pixels(tmp_path, monkeypatch):
    src = _scene(tmp_path)
    compress_scene(src, tmp_path / "v3.zarr", **TINY)
    create = TileStore.create.__func__
    monkeypatch.setattr(TileStore, "create", classmethod(
        lambda cls, *a, **k: create(cls, *a, **{**k, "format_version": 2})))
    compress_scene(src, tmp_path / "v2.zarr", **TINY)
    monkeypatch.undo()
    v2 = TileStore.open(tmp_path / "v2.zarr")
    assert v2.meta["format_version"] == 2
    v2.verify()
    np.testing.assert_array_equal(v2.read_valid(), TileStore.open(tmp_path / "v3.zarr").read_valid())
    outs = [decompress_scene(tmp_path / f"{v}.zarr", tmp_path / f"{v}.tif", processes=False,
                             progress=False, output=OutputSpec(cog=False)) for v in ("v2", "v3")]
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
