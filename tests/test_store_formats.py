"""Store format 3 keeps masks as a boolean Zarr array; format 2 stores still decode the same; stores
with the older tile_crc rule (no cell bound) still open, verify, resume and decode."""

import numpy as np
import pytest
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


def _older_crc_rule(monkeypatch):
    """TileStore.create writing the tile_crc rule of stores created before 2026-12-07: each
    written tile's own CRC-32 trailer, no 'tile_crc_rule' attribute."""
    from geocompress.store.tile_store import TRAILER_RULE

    create = TileStore.create.__func__
    monkeypatch.setattr(TileStore, "create", classmethod(
        lambda cls, *a, **k: create(cls, *a, **{**k, "crc_rule": TRAILER_RULE})))


def _trailers_recorded(ts):
    from geocompress.geo import TileStatus

    written = ts.status() == TileStatus.WRITTEN
    trailers = np.array([[int.from_bytes(bytes(t[-4:]), "little") if len(t) else 0 for t in row]
                         for row in ts.read_strings()], np.uint32)
    recorded = np.asarray(ts._crc[...], np.uint32)
    return written.any() and bool((recorded[written] == trailers[written]).all())


def test_a_store_with_the_older_tile_crc_rule_opens_verifies_and_decodes(tmp_path, monkeypatch):
    from geocompress.scene import store_info

    src = _scene(tmp_path)
    compress_scene(src, tmp_path / "new.zarr", **TINY)
    _older_crc_rule(monkeypatch)
    compress_scene(src, tmp_path / "old.zarr", **TINY)
    monkeypatch.undo()
    old, new = TileStore.open(tmp_path / "old.zarr"), TileStore.open(tmp_path / "new.zarr")
    assert "tile_crc_rule" not in old.meta and new.meta["tile_crc_rule"] == "crc32c(row,col,string)"
    assert "tile_crc_rule" not in zarr.open_group(str(tmp_path / "old.zarr"))["tile_crc"].attrs
    assert _trailers_recorded(old) and not _trailers_recorded(new)
    old.verify()
    assert store_info(tmp_path / "old.zarr")["checksums"] == "verified"
    outs = [decompress_scene(tmp_path / f"{v}.zarr", tmp_path / f"{v}.tif", processes=False,
                             progress=False, output=OutputSpec(cog=False)) for v in ("old", "new")]
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_an_incomplete_store_with_the_older_rule_resumes_under_it(tmp_path, monkeypatch):
    """A resumed run writes its blocks under the store's own rule, so the finished store still
    verifies. The older rule's limitation stays (LAYOUT.md): in such a store, incomplete, tile
    shards swapped together with their tile_crc chunks are not caught."""
    import shutil

    class Stop(Exception):
        pass

    def stop(done):
        raise Stop

    data = natural_tile(64, 192, seed=33)
    data[:, :, 64:128] = 255 - data[:, :, 64:128]   # tiles unlike each other
    src = write_scene(tmp_path / "s.tif", data)
    args = dict(quality=1, tile=64, shard=1, halo=0, workers=1, processes=False, progress=False)
    _older_crc_rule(monkeypatch)
    with pytest.raises(Stop):
        compress_scene(src, tmp_path / "old.zarr", on_block=stop, **args)
    with pytest.raises(Stop):  # two blocks written
        compress_scene(src, tmp_path / "old.zarr", on_block=stop, **args)
    monkeypatch.undo()
    ts = TileStore.open(tmp_path / "old.zarr")
    assert not ts.is_complete and "tile_crc_rule" not in ts.meta and _trailers_recorded(ts)
    ts.verify()
    hole = tmp_path / "swapped.zarr"
    shutil.copytree(tmp_path / "old.zarr", hole)
    for arr in ("tiles", "tile_crc"):
        a, b = hole / arr / "c" / "0" / "0", hole / arr / "c" / "0" / "1"
        ta = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(ta)
    TileStore.open(hole).verify()  # the documented limitation of the older rule
    compress_scene(src, tmp_path / "old.zarr", **args)  # resumed (the rule is not patched now)
    compress_scene(src, tmp_path / "new.zarr", **args)
    old = TileStore.open(tmp_path / "old.zarr")
    assert old.is_complete and "tile_crc_rule" not in old.meta and _trailers_recorded(old)
    old.verify()
    outs = [decompress_scene(tmp_path / f"{v}.zarr", tmp_path / f"{v}.tif", processes=False,
                             progress=False, output=OutputSpec(cog=False)) for v in ("old", "new")]
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        np.testing.assert_array_equal(a.read(), b.read())
