"""Damaged bookkeeping is a clear error naming the array, never wrong pixels (issue 25, item 3)."""

import json
import shutil

import pytest

from geocompress.scene import compress_scene, decompress_scene, store_info
from geocompress.store import StoreIntegrityError, TileStore

from .conftest import natural_tile
from .test_scene import TINY, write_scene


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("integrity")
    data = natural_tile(128, 192, seed=8)
    data[:, :64, 128:] = 77      # a constant tile
    data[:, 64:, :20] = 0        # nodata inside tiles: masks
    src = write_scene(tmp / "s.tif", data, nodata=0)
    store = tmp / "good.zarr"
    compress_scene(src, store, **TINY)
    return store


def _copy(good, tmp_path):
    dst = tmp_path / "copy.zarr"
    shutil.copytree(good, dst)
    return dst


def _decode(store, tmp_path):
    return decompress_scene(store, tmp_path / "out.tif", processes=False, progress=False, cog=False)


def _chunks(store, array):
    return sorted(p for p in (store / array / "c").rglob("*") if p.is_file())


def test_an_intact_store_verifies(good_store, tmp_path):
    assert store_info(good_store)["checksums"] == "verified"
    _decode(good_store, tmp_path)


@pytest.mark.parametrize("array", ["status", "constant", "masks"])
@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_damaged_bookkeeping_chunks_are_errors_naming_the_array(good_store, tmp_path, array, damage):
    store = _copy(good_store, tmp_path)
    chunk = _chunks(store, array)[0]
    if damage == "delete":
        chunk.unlink()
    else:
        b = bytearray(chunk.read_bytes())
        b[len(b) // 2] ^= 0xFF
        chunk.write_bytes(bytes(b))
    with pytest.raises(StoreIntegrityError, match=array if damage == "delete" else "damaged|match"):
        store_info(store)
    with pytest.raises(StoreIntegrityError):
        _decode(store, tmp_path)


def test_a_deleted_tile_shard_is_an_error_not_empty_tiles(good_store, tmp_path):
    store = _copy(good_store, tmp_path)
    _chunks(store, "tiles")[0].unlink()
    with pytest.raises(StoreIntegrityError, match="tiles"):
        _decode(store, tmp_path)


def test_two_tiles_swapped_are_an_error_not_misplaced_pixels(tmp_path):
    """Each string is checksum-valid and written by this store's codec: only its place is wrong.
    The store's digest binds every string's own CRC to its grid position."""
    import numpy as np

    from geocompress.geo import TileStatus

    src = write_scene(tmp_path / "s.tif", natural_tile(128, 128, seed=9))
    store = tmp_path / "q1.zarr"
    compress_scene(src, store, quality=1, tile=64, processes=False, progress=False, halo=0)
    ts = TileStore.open(store, "r+")
    written = [tuple(map(int, ij)) for ij in zip(*np.nonzero(ts.status() == TileStatus.WRITTEN))]
    strings = {ij: ts.read_string(*ij) for ij in written}
    a, b = next((a, b) for a in written for b in written if strings[a] != strings[b])
    ts._tiles[a[0]:a[0] + 1, a[1]:a[1] + 1] = np.array([[strings[b]]], dtype=object)
    ts._tiles[b[0]:b[0] + 1, b[1]:b[1] + 1] = np.array([[strings[a]]], dtype=object)
    with pytest.raises(StoreIntegrityError, match="tiles_crc32"):
        _decode(store, tmp_path)


@pytest.mark.parametrize("key, value", [("width", 999), ("nodata", 5), ("dtype", "uint16"),
                                        ("transform", None)])
def test_edited_root_attributes_are_refused(good_store, tmp_path, key, value):
    store = _copy(good_store, tmp_path)
    meta_path = store / "zarr.json"
    doc = json.loads(meta_path.read_text())
    attrs = doc["attributes"]["geocompress"]
    if key == "transform":
        attrs["grid"]["transform"][0] += 1.0
    else:
        attrs[key] = value
    meta_path.write_text(json.dumps(doc))
    with pytest.raises(StoreIntegrityError, match="root attributes"):
        TileStore.open(store)
    with pytest.raises(StoreIntegrityError):
        _decode(store, tmp_path)


def test_a_format_1_store_still_opens_and_says_it_cannot_be_verified(good_store, tmp_path):
    store = _copy(good_store, tmp_path)
    meta_path = store / "zarr.json"
    doc = json.loads(meta_path.read_text())
    attrs = doc["attributes"]["geocompress"]
    for k in ("attrs_digest", "content_digest"):
        attrs.pop(k)
    attrs["format_version"] = 1
    meta_path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="no checksums"):
        info = store_info(store)
    assert info["checksums"] == "none (store format 1)"
