"""Tests for geocompress.store: Zarr layout, georeferencing, resume, STAC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import zarr
from affine import Affine
from rasterio.crs import CRS

import rioxarray  # noqa: F401  (registers .rio)
from geocompress.geo import TileStatus, open_scene
from geocompress.store import StoreError, StoreMismatchError, StoreVersionError, TileStore
from geocompress.store._convention.cf import parse_geotransform
from geocompress.store._convention.zarr import read_crs, read_transform
from geocompress.store.stac import make_stac_item, write_stac_item

UTM = CRS.from_epsg(32618)
UTM_TF = Affine(10, 0, 500000, 0, -10, 4500000)
META = {"model": "mgssnet", "weights_digest": "sha256:abc", "quality": 4, "config": {"lmbda": 0.01}}


def write_tif(path: Path, count=3, h=70, w=100, dtype="uint8", crs=UTM, transform=UTM_TF, **kw) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    data = np.stack([(x + y + b) % 200 for b in range(count)]).astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=dtype,
                       crs=crs, transform=transform, **kw) as dst:
        dst.write(data)
    return path


@pytest.fixture
def scene(tmp_path):
    return open_scene(write_tif(tmp_path / "scene.tif", nodata=0))


@pytest.fixture
def store(tmp_path, scene):
    # 100x70 px, tile 16 -> 5 x 7 tiles; shard 2 -> 3 x 4 blocks
    return TileStore.create(tmp_path / "s.zarr", scene, scene.grid(tile=16), META, shard=2)


def _fill_block(store, rs, cs, payload=b"x"):
    h, w = rs.stop - rs.start, cs.stop - cs.start
    strings = np.empty((h, w), dtype=object)
    for i in range(h):
        for j in range(w):
            strings[i, j] = payload + bytes([rs.start + i, cs.start + j])
    store.write_block(rs, cs, strings, np.full((h, w), TileStatus.WRITTEN, np.uint8))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # rioxarray uses Affine *
def test_create_open_round_trip_georeferencing(store, scene):
    s = TileStore.open(store.path)
    assert s.shape == (5, 7) and s.grid == scene.grid(tile=16) and s.shard == 2
    m = s.meta
    assert m["format_version"] == 3 and m["status"] == "in-progress"
    assert (m["model"], m["weights_digest"], m["quality"], m["codec_config"]) == \
        ("mgssnet", "sha256:abc", 4, {"lmbda": 0.01})
    assert (m["width"], m["height"], m["count"], m["dtype"], m["nodata"]) == (100, 70, 3, "uint8", 0)
    assert m["source_checksum"] == scene.checksum and m["band_names"] == ["band_1", "band_2", "band_3"]
    assert s.codec_meta == META
    g = zarr.open_group(str(store.path), mode="r")
    attrs = dict(g.attrs)
    assert attrs["proj:code"] == "EPSG:32618" and read_crs(attrs) == UTM
    assert "proj:wkt2" not in attrs  # exactly one of code and WKT2, as the convention asks
    assert read_transform(attrs) == UTM_TF and attrs["spatial:shape"] == [70, 100]
    assert attrs["spatial:bbox"] == [500000, 4499300, 501000, 4500000]
    assert {c["name"] for c in attrs["zarr_conventions"]} == {"proj", "spatial"}  # as zarr-cm registers them
    assert (s.status() == TileStatus.PENDING).all()
    # CF / rioxarray: per-tile arrays are georeferenced on the tile-index grid
    ds = xr.open_zarr(store.path, consolidated=False)
    assert ds.rio.crs == UTM
    assert ds.status.rio.crs == UTM
    assert ds.status.rio.transform() == UTM_TF @ Affine.scale(16)
    ref = ds.spatial_ref.attrs
    assert parse_geotransform(ref["GeoTransform"]) == UTM_TF @ Affine.scale(16)
    assert CRS.from_wkt(ref["crs_wkt"]) == UTM
    assert ds.status.encoding.get("grid_mapping", ds.status.attrs.get("grid_mapping")) == "spatial_ref"
    assert ds.status.dims == ("y", "x") and ds.tiles.shape == (5, 7)


def test_nul_strings_round_trip_exactly(store):
    rs, cs = slice(0, 2), slice(0, 2)
    strings = np.empty((2, 2), dtype=object)
    strings[:] = [[b"ab\x00\x00", b"\x00\x00"], [b"\x00x\x00y\x00", bytes(range(256)) + b"\x00"]]
    store.write_block(rs, cs, strings, np.ones((2, 2), np.uint8))
    s = TileStore.open(store.path)
    got = s.read_strings(rs, cs)
    for i in range(2):
        for j in range(2):
            assert got[i, j] == strings[i, j] and s.read_string(i, j) == strings[i, j]
    assert s.read_strings(slice(4, 5), slice(6, 7))[0, 0] == b""  # not written: empty
    assert s.nbytes_tiles() == sum(len(v) for v in strings.ravel())
    with pytest.raises(TypeError):
        s.read_strings(0, 0)


def test_shard_blocks_resume_and_complete(store):
    blocks = list(store.shard_blocks())
    assert len(blocks) == 12 and blocks[0] == (slice(0, 2), slice(0, 2)) and blocks[-1] == (slice(4, 5), slice(6, 7))
    for rs, cs in blocks[:5]:
        _fill_block(store, rs, cs)
    with pytest.raises(StoreError, match="PENDING"):
        store.mark_complete()
    s = TileStore.open(store.path, mode="r+")  # "rerun" after an interruption
    pending = list(s.pending_blocks())
    assert pending == blocks[5:]
    st = s.status()
    assert (st[0:2, :] == TileStatus.WRITTEN).all() and (st[2:4, 0:2] == TileStatus.WRITTEN).all()
    assert (st[2:4, 4:] == TileStatus.PENDING).all() and (st[4:, :] == TileStatus.PENDING).all()
    for rs, cs in pending:
        _fill_block(s, rs, cs)
    assert s.status_counts()["WRITTEN"] == 35
    s.mark_complete()
    again = TileStore.open(store.path)
    assert again.is_complete and "completed" in again.meta
    assert again.read_string(4, 6) == b"x\x04\x06"
    with pytest.raises(StoreError, match="read-only"):
        _fill_block(again, slice(0, 2), slice(0, 2))


def test_write_block_validation_and_constants(store):
    st = np.array([[TileStatus.WRITTEN, TileStatus.DROPPED_NODATA],
                   [TileStatus.DROPPED_CONSTANT, TileStatus.WRITTEN]], np.uint8)
    strings = np.array([[b"a", None], [None, b"b"]], dtype=object)
    with pytest.raises(ValueError, match="shard-aligned"):
        store.write_block(slice(1, 3), slice(0, 2), strings, st)
    with pytest.raises(ValueError, match="constants"):
        store.write_block(slice(0, 2), slice(0, 2), strings, st)
    bad = strings.copy()
    bad[0, 0] = None
    consts = np.zeros((2, 2, 3), np.uint8)
    consts[1, 0] = [7, 8, 9]
    with pytest.raises(ValueError, match="WRITTEN but has no bytes"):
        store.write_block(slice(0, 2), slice(0, 2), bad, st, consts)
    with pytest.raises(ValueError, match="final"):
        store.write_block(slice(0, 2), slice(0, 2), strings, np.zeros((2, 2), np.uint8), consts)
    store.write_block(slice(0, 2), slice(0, 2), strings, st, consts)
    s = TileStore.open(store.path)
    assert s.status(slice(0, 2), slice(0, 2)).tolist() == [[1, 2], [3, 1]]
    assert s.constants(slice(1, 2), slice(0, 1))[0, 0].tolist() == [7, 8, 9]
    assert s.read_strings(slice(0, 2), slice(0, 2)).tolist() == [[b"a", b""], [b"", b"b"]]
    # edge block (shorter than a shard) is accepted as a whole block
    _fill_block(store, slice(4, 5), slice(6, 7))


def test_check_compatible_names_differences(store, scene):
    store.check_compatible(scene.checksum, META, tile=16)
    with pytest.raises(StoreMismatchError) as e:
        store.check_compatible("0" * 64, {**META, "weights_digest": "sha256:zzz", "quality": 2}, tile=32)
    msg = str(e.value)
    for what in ("source checksum", "weights digest", "quality", "tile size", "--overwrite"):
        assert what in msg
    assert "model" not in msg.split("(")[1].split(";")[0] or "weights" in msg
    with pytest.raises(StoreMismatchError, match="model"):
        store.check_compatible(scene.checksum, {**META, "model": "other"})


def test_open_errors_and_versions(tmp_path, store, scene):
    with pytest.raises(StoreError, match="does not exist"):
        TileStore.open(tmp_path / "missing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError):
        TileStore.open(tmp_path / "empty")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a geocompress store"):
        TileStore.open(tmp_path / "foreign.zarr")
    g = zarr.open_group(str(store.path), mode="r+")
    for v, hint in ((99, "upgrade"), (0, "re-create")):
        g.attrs["geocompress"] = {**g.attrs["geocompress"], "format_version": v}
        with pytest.raises(StoreVersionError, match=hint):
            TileStore.open(store.path)


def test_create_overwrite_rules(tmp_path, store, scene):
    grid = scene.grid(tile=16)
    with pytest.raises(StoreError, match="overwrite"):
        TileStore.create(store.path, scene, grid, META)
    _fill_block(store, slice(0, 2), slice(0, 2))
    fresh = TileStore.create(store.path, scene, grid, META, overwrite=True)
    assert (fresh.status() == 0).all()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("do not delete")
    with pytest.raises(StoreError, match="not a geocompress store"):
        TileStore.create(precious, scene, grid, META, overwrite=True)
    assert (precious / "keep.txt").exists()
    with pytest.raises(ValueError, match="weights_digest"):
        TileStore.create(tmp_path / "x.zarr", scene, grid, {"model": "m", "quality": 1})


def test_custom_crs_without_code(tmp_path):
    geos = CRS.from_proj4("+proj=geos +h=35786023 +lon_0=-75 +sweep=x +ellps=GRS80 +units=m +no_defs")
    tf = Affine(20000, 0, -400000, 0, -20000, 400000)
    scene = open_scene(write_tif(tmp_path / "g.tif", crs=geos, transform=tf, h=40, w=40))
    s = TileStore.create(tmp_path / "g.zarr", scene, scene.grid(tile=16), META)
    attrs = dict(zarr.open_group(str(s.path), mode="r").attrs)
    assert "proj:code" not in attrs and read_crs(attrs) == scene.crs
    item = make_stac_item(s.path, scene, s.grid, META)
    assert "proj:code" not in item.properties or item.properties["proj:code"] is None
    assert item.properties["proj:wkt2"]
    lon0, lat0, lon1, lat1 = item.bbox
    assert lon0 < -75 < lon1 and lat0 < 0 < lat1


def test_stac_item(tmp_path, store, scene):
    item = make_stac_item(store.path, scene, store.grid, META)
    p = item.properties
    assert p["proj:code"] == "EPSG:32618" and p["proj:shape"] == [70, 100]
    assert p["proj:transform"] == [10, 0, 500000, 0, -10, 4500000]
    assert p["proj:bbox"] == [500000, 4499300, 501000, 4500000]
    lon0, lat0, lon1, lat1 = item.bbox  # UTM 18N, x=500 km is the central meridian -75
    assert lon0 == pytest.approx(-75) and -75 < lon1 < -74.9 and 40 < lat0 < lat1 < 41
    assert item.geometry["type"] == "Polygon"
    assert item.assets["zarr"].media_type == "application/vnd+zarr"
    out = write_stac_item(store.path, scene, store.grid, META)
    assert out == tmp_path / "s.stac-item.json" and out.exists()
    d = json.loads(out.read_text())
    assert d["assets"]["zarr"]["href"] == "./s.zarr"
    assert "https://stac-extensions.github.io/projection" in d["stac_extensions"][0]


def test_parallel_block_writers(store):
    """One writer per shard block (threads here): every tile lands intact."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(lambda b: _fill_block(store, *b, payload=b"\x00p\x00"), store.shard_blocks()))
    got = TileStore.open(store.path).read_strings()
    for (i, j), v in np.ndenumerate(got):
        assert v == b"\x00p\x00" + bytes([i, j])


def test_codec_meta_aliases(tmp_path, scene):
    meta = {"arch": "mgssnet", "digest": "sha256:abc", "quality": 4}
    s = TileStore.create(tmp_path / "a.zarr", scene, scene.grid(tile=16), meta)
    assert s.meta["model"] == "mgssnet" and s.meta["weights_digest"] == "sha256:abc"
    s.check_compatible(scene.checksum, meta)


def test_layers_do_not_import_model_or_codec():
    import subprocess
    import sys

    code = (
        "import sys, geocompress.geo, geocompress.store, geocompress.store.stac;"
        "bad=[m for m in sys.modules if m.split('.')[0]=='torch'"
        " or m.startswith(('geocompress.models','geocompress.codec'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
