"""Damaged bookkeeping is a clear error naming the array, never wrong pixels (issue 25, item 3)."""

import json
import shutil

import pytest

from geocompress.scene import OutputSpec, compress_scene, decompress_scene, store_info
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
    return decompress_scene(store, tmp_path / "out.tif", processes=False, progress=False,
                            output=OutputSpec(cog=False))


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
    # issue 36, messages: a flipped chunk said "a bookkeeping chunk is damaged" without the array
    with pytest.raises(StoreIntegrityError, match=f"'{array}'"):
        store_info(store)
    with pytest.raises(StoreIntegrityError, match=f"'{array}'"):
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


def test_a_format_1_store_still_opens_and_says_it_cannot_be_verified(tmp_path, monkeypatch):
    """A store really laid out as format 1 (no crc32c, masks as bytes, no digests)."""
    create = TileStore.create.__func__
    monkeypatch.setattr(TileStore, "create", classmethod(
        lambda cls, *a, **k: create(cls, *a, **{**k, "format_version": 1})))
    data = natural_tile(64, 128, seed=8)
    data[:, :, :20] = 0
    store = tmp_path / "v1.zarr"
    compress_scene(write_scene(tmp_path / "s.tif", data, nodata=0), store, **TINY)
    monkeypatch.undo()
    assert "attrs_digest" not in TileStore.open(store).meta
    with pytest.warns(UserWarning, match="no checksums"):
        info = store_info(store)
    assert info["checksums"] == "none (store format 1)"
    with pytest.warns(UserWarning, match="no checksums"):
        _decode(store, tmp_path)


def _edit(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("version, drop_digests", [(1, False), (1, True), (2, False), (2, True)])
def test_an_edited_format_version_is_refused_before_any_read(good_store, tmp_path, capsys,
                                                              version, drop_digests):
    """Issue 36, item 7: a format 3 store edited to say format 1 skipped the attribute digest
    (a warning), then read its boolean masks as format-1 bytes (zlib errors, a 24 GiB
    allocation). The arrays' layout and the digests present tell the real format."""
    from geocompress.cli import main

    store = _copy(good_store, tmp_path)

    def downgrade(doc):
        attrs = doc["attributes"]["geocompress"]
        attrs["format_version"] = version
        for k in ("attrs_digest", "content_digest", "georef_digest") if drop_digests else ():
            attrs.pop(k, None)

    _edit(store / "zarr.json", downgrade)
    with pytest.raises(StoreIntegrityError, match=f"say store format {version}.*format version "
                                                  f"was edited"):
        TileStore.open(store)
    with pytest.raises(StoreIntegrityError):
        _decode(store, tmp_path)
    assert main(["decompress", str(store), str(tmp_path / "o.tif"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("geocompress decompress: error:") and "\n" not in err
    assert not (tmp_path / "o.tif").exists()


def _set_geotransform(attrs):
    gt = attrs["GeoTransform"].split()
    gt[0] = repr(float(gt[0]) + 1000.0)
    attrs["GeoTransform"] = " ".join(gt)


GEOREF_EDITS = {
    "root proj:code": ("zarr.json", lambda d: d["attributes"].update({"proj:code": "EPSG:4326"})),
    "root spatial:transform": ("zarr.json", lambda d: d["attributes"]["spatial:transform"]
                               .__setitem__(2, d["attributes"]["spatial:transform"][2] + 1000)),
    "spatial_ref GeoTransform": ("spatial_ref/zarr.json", lambda d: _set_geotransform(d["attributes"])),
    "spatial_ref GeoTransform, consolidated copy": (
        "zarr.json", lambda d: _set_geotransform(
            d["consolidated_metadata"]["metadata"]["spatial_ref"]["attributes"])),
    "spatial_ref crs_wkt": ("spatial_ref/zarr.json", lambda d: d["attributes"].update(
        crs_wkt=d["attributes"]["crs_wkt"].replace("18N", "19N"))),
    "status grid_mapping": ("status/zarr.json",
                            lambda d: d["attributes"].update(grid_mapping="other")),
}


@pytest.mark.parametrize("edit", list(GEOREF_EDITS))
def test_edited_georeferencing_outside_the_geocompress_attributes_is_refused(good_store, tmp_path,
                                                                               capsys, edit):
    """Issue 36, item 5: rioxarray (xr.open_zarr) and GeoZarr readers take the CRS and transform
    from the root proj: / spatial: attributes and the spatial_ref variable, which the attribute
    digest did not cover: an edit left `info` saying `checksums: verified`."""
    from geocompress.cli import main

    store = _copy(good_store, tmp_path)
    doc, change = GEOREF_EDITS[edit]
    _edit(store / doc, change)
    with pytest.raises(StoreIntegrityError, match="georeferencing attributes .* were edited"):
        TileStore.open(store)
    with pytest.raises(StoreIntegrityError, match="georeferencing"):
        store_info(store)
    with pytest.raises(StoreIntegrityError, match="georeferencing"):
        _decode(store, tmp_path)
    assert main(["info", str(store)]) == 1
    assert "georeferencing attributes" in capsys.readouterr().err


def test_the_georeferencing_readers_see_is_what_was_written(good_store):
    """The digest is of what xarray / rioxarray read: an intact store opens, and they place it
    where geocompress does."""
    import xarray as xr
    import rioxarray  # noqa: F401

    ts = TileStore.open(good_store)
    for consolidated in (True, False):
        ds = xr.open_zarr(good_store, consolidated=consolidated)
        assert ds.status.rio.crs == ts.grid.crs
        assert ds.status.rio.transform() == ts.grid.tile_index_transform


def _incomplete_store(tmp_path):
    """A store whose run stopped after its first shard block (others still pending)."""
    class Stop(Exception):
        pass

    def stop(done):
        raise Stop

    src = write_scene(tmp_path / "s.tif", natural_tile(128, 192, seed=10))
    store = tmp_path / "incomplete.zarr"
    with pytest.raises(Stop):  # trained weights: untrained ones give equal strings
        compress_scene(src, store, quality=1, tile=64, shard=2, halo=0, workers=1,
                       processes=False, progress=False, on_block=stop)
    return store


def test_swapped_tiles_of_an_incomplete_store_are_an_error(tmp_path):
    """Issue 36, item 6: without a content digest (the store never completed) verification
    returned early, and two swapped tile strings decoded with --allow-incomplete. Each block's
    tile CRCs are written with the block, so the binding holds before completion too."""
    import numpy as np

    from geocompress.cli import main
    from geocompress.geo import TileStatus

    store = _incomplete_store(tmp_path)
    ts = TileStore.open(store, "r+")
    assert not ts.is_complete and "content_digest" not in ts.meta
    written = [tuple(map(int, ij)) for ij in zip(*np.nonzero(ts.status() == TileStatus.WRITTEN))]
    assert len(written) >= 2 and ts.status_counts()["PENDING"] > 0
    with pytest.warns(UserWarning, match="incomplete"):  # intact: decodes, pending tiles masked
        decompress_scene(store, tmp_path / "ok.tif", processes=False, progress=False,
                         allow_incomplete=True)
    strings = {ij: ts.read_string(*ij) for ij in written}
    a, b = next((a, b) for a in written for b in written if strings[a] != strings[b])
    ts._tiles[a[0]:a[0] + 1, a[1]:a[1] + 1] = np.array([[strings[b]]], dtype=object)
    ts._tiles[b[0]:b[0] + 1, b[1]:b[1] + 1] = np.array([[strings[a]]], dtype=object)
    with pytest.raises(StoreIntegrityError, match=r"2 written tile\(s\) hold strings other than"):
        decompress_scene(store, tmp_path / "bad.tif", processes=False, progress=False,
                         allow_incomplete=True)
    assert main(["decompress", str(store), str(tmp_path / "o.tif"), "--allow-incomplete",
                 "--quiet"]) == 1
    with pytest.raises(StoreIntegrityError, match="tile_crc"):
        store_info(store)


def test_a_deleted_tile_crc_chunk_of_an_incomplete_store_is_an_error(tmp_path):
    store = _incomplete_store(tmp_path)
    for chunk in _chunks(store, "tile_crc"):
        chunk.unlink()
    with pytest.raises(StoreIntegrityError, match="tile_crc"):
        decompress_scene(store, tmp_path / "bad.tif", processes=False, progress=False,
                         allow_incomplete=True)


def _move_block(store, arrays, src=("0", "0"), dst=("0", "1")):
    """Move shard block ``src``'s chunk files of ``arrays`` to block ``dst`` (an attacker with
    file access: every file still passes its own checksums)."""
    for array in arrays:
        a, b = store / array / "c" / src[0] / src[1], store / array / "c" / dst[0] / dst[1]
        if not a.exists() and array == "constant":
            continue  # all fill values (no DROPPED_CONSTANT tile): zarr writes no chunk
        assert a.exists() and not b.exists(), (array, a, b)
        b.parent.mkdir(parents=True, exist_ok=True)
        a.rename(b)


@pytest.mark.parametrize("arrays, cells", [
    (("tiles", "tile_crc"), r"\(0, 0\), \(0, 1\), \(1, 0\), \(1, 1\)"),  # left behind: empty cells
    (("tiles", "tile_crc", "status", "masks", "constant"), r"\(0, 2\), \(1, 2\)"),  # all of it
])
def test_a_tile_block_moved_to_other_cells_with_its_crc_chunk_is_refused_naming_the_cells(
        tmp_path, capsys, arrays, cells):
    """Hostile rerun finding D: in an incomplete store a tile's recorded check value bound its
    string but not its cell. It now covers the cell (tile_crc_rule), so a block of tiles moved
    to another block together with its tile_crc chunk (and the rest of its bookkeeping) is
    refused, naming the cells."""
    from geocompress.cli import main

    store = _incomplete_store(tmp_path)
    assert TileStore.open(store).meta["tile_crc_rule"] == "crc32c(row,col,string)"
    _move_block(store, arrays)
    with pytest.raises(StoreIntegrityError, match=rf"hold strings other than .*{cells}.*tile_crc"):
        decompress_scene(store, tmp_path / "bad.tif", processes=False, progress=False,
                         allow_incomplete=True)
    with pytest.raises(StoreIntegrityError, match=cells):
        store_info(store)
    capsys.readouterr()
    assert main(["--quiet", "decompress", str(store), str(tmp_path / "o.tif"),
                 "--allow-incomplete"]) == 1
    assert main(["info", str(store)]) == 1
    assert not (tmp_path / "o.tif").exists()


def test_swapped_tile_and_crc_pairs_and_deleted_pairs_of_an_incomplete_store_are_errors(tmp_path):
    """Each (string, recorded value) pair moved together, inside one block: only the cell in the
    value tells. A tile chunk deleted with its tile_crc chunk reads as b"" / 0, which the cell
    rule does not give for a WRITTEN cell."""
    import numpy as np

    store = _incomplete_store(tmp_path)
    ts = TileStore.open(store, "r+")
    strings, crcs = ts.read_strings(slice(0, 2), slice(0, 2)), ts._crc[0:2, 0:2]
    ts._tiles[0:2, 0:2] = strings[::-1, ::-1].copy()
    ts._crc[0:2, 0:2] = np.ascontiguousarray(crcs[::-1, ::-1])
    with pytest.raises(StoreIntegrityError, match=r"4 written tile\(s\)"):
        TileStore.open(store).verify()
    ts._tiles[0:2, 0:2] = strings
    ts._crc[0:2, 0:2] = crcs
    TileStore.open(store).verify()  # restored: intact again
    for array in ("tiles", "tile_crc"):
        for chunk in _chunks(store, array):
            chunk.unlink()
    with pytest.raises(StoreIntegrityError, match=r"4 written tile\(s\).*\(0, 0\)"):
        TileStore.open(store).verify()


def test_the_cell_check_value_depends_on_the_string_not_only_its_length():
    """Why CRC-32C: a tile string ends in its own zlib CRC-32, and the CRC-32 of any bytes followed
    by their own CRC-32 is a constant, so zlib.crc32 over (cell, string) -- or seeded with the
    cell -- would tell the cell and the length only: two same-length strings would pass."""
    import os
    import struct
    import zlib

    from geocompress.store.tile_store import cell_crc

    a, b = (m + struct.pack("<I", zlib.crc32(m)) for m in (os.urandom(300), os.urandom(300)))
    cell = struct.pack("<QQ", 3, 5)
    assert zlib.crc32(cell + a) == zlib.crc32(cell + b)  # the pitfall
    assert cell_crc(3, 5, a) != cell_crc(3, 5, b)
    assert cell_crc(3, 5, a) != cell_crc(5, 3, a) != cell_crc(3, 6, a)
    assert cell_crc(0, 0, b"") != 0


def test_a_lowered_tile_crc_rule_is_refused(tmp_path):
    """The rule is a root attribute under attrs_digest from creation (before any tile); the
    tile_crc array's own attributes name it too; and values written under the cell rule are not
    string trailers, so a store verified under the older rule fails on every written tile."""
    from geocompress.store import StoreVersionError
    from geocompress.store.tile_store import _stored_georef, attrs_digest
    import zarr

    store = _incomplete_store(tmp_path)

    def set_rule(rule, redigest):
        def change(doc):
            attrs = doc["attributes"]["geocompress"]
            if rule is None:
                attrs.pop("tile_crc_rule", None)
            else:
                attrs["tile_crc_rule"] = rule
            if redigest:
                attrs["attrs_digest"] = attrs_digest(attrs)
        _edit(store / "zarr.json", change)

    set_rule(None, redigest=False)
    with pytest.raises(StoreIntegrityError, match="root attributes"):
        TileStore.open(store)
    set_rule(None, redigest=True)  # anyone can recompute an unkeyed digest
    with pytest.raises(StoreIntegrityError, match="'tile_crc' array was written with rule"):
        TileStore.open(store)
    set_rule("crc64(cell)", redigest=True)
    with pytest.raises(StoreVersionError, match="crc64"):
        TileStore.open(store)
    # the array's attributes edited too, and the georeferencing digest recomputed: it opens, but
    # no written tile's recorded value is its string's trailer
    set_rule(None, redigest=False)
    _edit(store / "tile_crc" / "zarr.json", lambda d: d["attributes"].pop("tile_crc_rule"))

    def redigest(doc):
        attrs = doc["attributes"]["geocompress"]
        attrs["georef_digest"] = _stored_georef(zarr.open_group(str(store), mode="r",
                                                                use_consolidated=False))
        attrs["attrs_digest"] = attrs_digest(attrs)
    _edit(store / "zarr.json", redigest)
    ts = TileStore.open(store)
    assert "tile_crc_rule" not in ts.meta
    written = int((ts.status() == 1).sum())
    with pytest.raises(StoreIntegrityError, match=rf"{written} written tile\(s\)"):
        ts.verify()


def test_a_tile_crc_array_the_root_attributes_do_not_record_is_refused(tmp_path):
    from geocompress.store.tile_store import attrs_digest

    store = _incomplete_store(tmp_path)

    def drop(doc):
        attrs = doc["attributes"]["geocompress"]
        attrs.pop("tile_crc")
        attrs["attrs_digest"] = attrs_digest(attrs)
    _edit(store / "zarr.json", drop)
    with pytest.raises(StoreIntegrityError, match="no 'tile_crc' array"):
        TileStore.open(store)
