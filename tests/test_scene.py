"""The scene pipeline as users rely on it: georeferenced round trips, regions, resume, errors."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from geocompress.codec import WeightsMismatchError
from geocompress.geo import MissingCRSError, TileStatus, UnsupportedDtypeError
from geocompress.scene import (
    compress_scene,
    decompress_scene,
    open_dataarray,
    store_info,
)
from geocompress.store import StoreError, StoreMismatchError, TileStore

from .conftest import natural_tile

TINY = dict(arch="mbt2018-mean", pretrained=False, model_config={"N": 16, "M": 24},
            processes=False, progress=False, tile=64, shard=2)


def write_scene(path, data, nodata=None, crs="EPSG:32618", colorinterp=None):
    c, h, w = data.shape
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype=data.dtype.name,
                   transform=from_origin(500000, 4200000, 10, 10), nodata=nodata)
    if crs:
        profile["crs"] = CRS.from_string(crs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if colorinterp:
            dst.colorinterp = colorinterp
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """150 x 200, 3 bands, nodata 0 in the top-left tile and a border, one constant tile."""
    data = natural_tile(150, 200, seed=11)
    data[data == 0] = 1                      # 0 is nodata: keep it out of the image
    data[:, :64, :64] = 0                    # a whole nodata tile
    data[:, 64:80, :30] = 0                  # nodata pixels inside a kept tile
    data[:, 64:128, 128:192] = 77            # a constant tile
    return write_scene(tmp_path_factory.mktemp("scene") / "scene.tif", data, nodata=0)


@pytest.fixture(scope="module")
def compressed(scene, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "scene.zarr"
    result = compress_scene(scene, store, **TINY)
    return store, result


@pytest.fixture(scope="module")
def full_tif(compressed, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "full.tif"
    return decompress_scene(compressed[0], out, processes=False, progress=False)


def test_store_counts_and_info(compressed):
    store, r = compressed
    assert (r.tiles, r.dropped_nodata, r.dropped_constant) == (12, 1, 1)
    assert r.written == 10 and r.bits == 8
    info = store_info(store)
    assert info["status"] == "complete" and info["crs"] == "EPSG:32618"
    assert info["tile_bytes"] > 0 and info["ratio_raw"] > 1
    ts = TileStore.open(store)
    assert ts.status()[0, 0] == TileStatus.DROPPED_NODATA
    assert ts.status()[1, 2] == TileStatus.DROPPED_CONSTANT


def test_georeferencing_round_trip(scene, full_tif):
    with rasterio.open(scene) as a, rasterio.open(full_tif) as b:
        assert (b.crs, b.transform, b.bounds, b.dtypes, b.count, b.nodata, b.shape) == \
               (a.crs, a.transform, a.bounds, a.dtypes, a.count, a.nodata, a.shape)
        assert b.profile["tiled"] and b.profile["compress"] == "deflate"
        assert b.overviews(1) or max(b.shape) <= 512  # COG: overviews only for larger images


def test_nodata_comes_back_as_nodata_and_constants_exactly(scene, full_tif):
    with rasterio.open(scene) as a, rasterio.open(full_tif) as b:
        y = b.read()
        invalid = a.dataset_mask() == 0
    assert (y[:, invalid] == 0).all()                 # dropped tile and masked pixels
    np.testing.assert_array_equal(y[:, 64:128, 128:192], 77)  # constant tile: exact
    assert invalid[:64, :64].all() and invalid[64:80, :30].all()


def test_window_and_bbox_decode_equal_crops_of_the_full_decode(compressed, full_tif, tmp_path):
    store = compressed[0]
    with rasterio.open(full_tif) as f:
        full = f.read()
        transform = f.transform
    win = decompress_scene(store, tmp_path / "win.tif", window=(50, 30, 100, 90),
                           processes=False, progress=False)
    with rasterio.open(win) as w:
        np.testing.assert_array_equal(w.read(), full[:, 30:120, 50:150])
        assert w.transform == transform @ transform.translation(50, 30)
    # bbox in another CRS (lon/lat) around the same pixels
    from pyproj import Transformer
    t = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True)
    x0, y1 = transform @ (60, 40)
    x1, y0 = transform @ (140, 110)
    lon0, lat0 = t.transform(x0, y0)
    lon1, lat1 = t.transform(x1, y1)
    out = decompress_scene(store, tmp_path / "bbox.tif", bbox=(lon0, lat0, lon1, lat1),
                           bbox_crs="EPSG:4326", processes=False, progress=False)
    with rasterio.open(out) as b:
        col, row = ~transform @ (b.transform.c, b.transform.f)
        r, c = int(round(row)), int(round(col))
        np.testing.assert_array_equal(b.read(), full[:, r:r + b.height, c:c + b.width])
        assert b.width >= 80 and b.height >= 70
    with pytest.raises(ValueError):
        decompress_scene(store, tmp_path / "none.tif", bbox=(0, 0, 1, 1), bbox_crs="EPSG:4326",
                         processes=False, progress=False)


def test_cli_bbox_of_the_whole_world_gives_the_whole_scene(compressed, full_tif, tmp_path):
    """Issue 36, item 11: `--bbox -180 -90 180 90 --bbox-crs EPSG:4326` said the bbox did not
    intersect the scene (or cut it to one column)."""
    from geocompress.cli import main

    out = tmp_path / "world.tif"
    assert main(["--quiet", "decompress", str(compressed[0]), str(out), "--bbox", "-180", "-90",
                 "180", "90", "--bbox-crs", "EPSG:4326", "--workers", "1"]) == 0
    with rasterio.open(out) as w, rasterio.open(full_tif) as f:
        assert (w.shape, w.transform) == (f.shape, f.transform)
        np.testing.assert_array_equal(w.read(), f.read())


def test_lazy_dataarray_matches_the_geotiff(compressed, full_tif):
    arr = open_dataarray(compressed[0], chunk_tiles=1)
    assert arr.shape == (3, 150, 200) and arr.chunks[1][0] == 64
    assert arr.rio.crs == CRS.from_epsg(32618)
    with rasterio.open(full_tif) as f:
        assert arr.rio.transform() == f.transform
        np.testing.assert_array_equal(arr[:, 70:140, 20:90].values, f.read()[:, 70:140, 20:90])


def test_interrupted_run_resumes_to_the_same_bytes(scene, compressed, tmp_path):
    store = tmp_path / "interrupted.zarr"

    class Stop(Exception):
        pass

    def stop(done):
        raise Stop

    one = {**TINY, "shard": 1, "workers": 1}  # 12 one-tile blocks, one worker: some stay pending
    with pytest.raises(Stop):
        compress_scene(scene, store, **one, on_block=stop)
    ts = TileStore.open(store)
    assert not ts.is_complete and ts.status_counts()["PENDING"] > 0  # a valid, partial store
    r = compress_scene(scene, store, **one)
    assert r.blocks_resumed >= 1
    a = TileStore.open(store).read_strings()
    b = TileStore.open(compressed[0]).read_strings()
    assert [bytes(s) for s in a.ravel()] == [bytes(s) for s in b.ravel()]


def test_store_of_other_weights_is_refused_unless_overwrite(scene, compressed, tmp_path):
    store = tmp_path / "s.zarr"
    compress_scene(scene, store, **TINY)
    other = {**TINY, "model_config": {"N": 16, "M": 32}}
    with pytest.raises(StoreMismatchError, match="weights digest"):
        compress_scene(scene, store, **other)
    r = compress_scene(scene, store, **other, overwrite=True)
    assert r.written == 10


def test_a_store_of_another_model_says_how_to_resume_it(scene, tmp_path):
    """A store of the fixed-rate ladder resumed with today's default (another model) is refused,
    naming the model and quality that resume it."""
    store = tmp_path / "s.zarr"
    compress_scene(scene, store, **{**TINY, "arch": "mgssnet"})
    with pytest.raises(StoreMismatchError, match=r"to resume it ask for its model \(--arch mgssnet "
                                                 r"--quality 0\)"):
        compress_scene(scene, store, **{**TINY, "arch": "mgssnet-vr", "quality": 2.0})
    with pytest.raises(StoreMismatchError) as e:  # the same model: nothing about another one
        compress_scene(scene, store, **{**TINY, "arch": "mgssnet", "model_config": {"N": 16, "M": 32}})
    assert "to resume it" not in str(e.value)


def test_decompress_with_wrong_checkpoint_is_refused(compressed, tmp_path):
    from geocompress.codec import save_checkpoint, untrained

    ck = tmp_path / "other.pt"
    save_checkpoint(untrained("mbt2018-mean", N=16, M=32), ck)
    with pytest.raises(WeightsMismatchError):
        decompress_scene(compressed[0], tmp_path / "x.tif", checkpoint=str(ck), processes=False,
                         progress=False)


def test_uint16_single_band_with_auto_bit_depth(tmp_path):
    data = (natural_tile(100, 130, c=1, dtype=np.uint16, seed=3).astype(np.uint32) * 2).astype(np.uint16)
    src = write_scene(tmp_path / "u16.tif", data)  # values < 8192: 13 bits
    r = compress_scene(src, tmp_path / "u16.zarr", **TINY)
    assert r.bits == 13
    out = decompress_scene(tmp_path / "u16.zarr", tmp_path / "u16_out.tif", processes=False,
                           progress=False)
    with rasterio.open(out) as b:
        assert b.dtypes == ("uint16",) and b.count == 1 and b.nodata is None
        assert b.read().max() < 2 ** 13


def test_rgba_alpha_becomes_the_mask(tmp_path):
    from rasterio.enums import ColorInterp as CI

    data = natural_tile(80, 90, c=4, seed=4)
    data[3] = 255
    data[3, :20, :] = 0
    src = write_scene(tmp_path / "rgba.tif", data,
                      colorinterp=[CI.red, CI.green, CI.blue, CI.alpha])
    compress_scene(src, tmp_path / "rgba.zarr", **TINY)
    out = decompress_scene(tmp_path / "rgba.zarr", tmp_path / "rgba_out.tif", processes=False,
                           progress=False)
    with rasterio.open(out) as b:
        y = b.read()
    np.testing.assert_array_equal(y[3], data[3])  # alpha rebuilt exactly from the mask


def test_bad_inputs_get_clear_errors(tmp_path):
    no_crs = write_scene(tmp_path / "nocrs.tif", natural_tile(64, 64), crs=None)
    with pytest.raises(MissingCRSError, match="CRS"):
        compress_scene(no_crs, tmp_path / "a.zarr", **TINY)
    f32 = write_scene(tmp_path / "f32.tif", natural_tile(64, 64).astype(np.float32))
    with pytest.raises(UnsupportedDtypeError, match="float32"):
        compress_scene(f32, tmp_path / "b.zarr", **TINY)
    with pytest.raises(StoreError, match="no geocompress store"):
        decompress_scene(tmp_path / "missing.zarr", tmp_path / "c.tif", processes=False)
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "x.txt").write_text("hi")
    with pytest.raises(StoreError):
        store_info(tmp_path / "notastore")


def test_cli_compress_info_decompress(scene, tmp_path, capsys):
    from geocompress.cli import main

    store = tmp_path / "cli.zarr"
    assert main(["--quiet", "compress", str(scene), str(store), "--untrained", "--tile", "64",
                 "--shard", "4"]) == 0
    assert main(["info", str(store)]) == 0
    assert "EPSG:32618" in capsys.readouterr().out
    assert main(["--quiet", "decompress", str(store), str(tmp_path / "o.tif"),
                 "--window", "0", "0", "64", "64"]) == 0
    with rasterio.open(tmp_path / "o.tif") as f:
        assert f.shape == (64, 64)
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 1


def test_refined_store_decodes_plainly_and_keeps_its_setting(scene, tmp_path):
    from geocompress.codec import save_checkpoint, untrained

    ck = str(tmp_path / "w.pt")
    save_checkpoint(untrained("mbt2018-mean", N=16, M=24), ck, meta={"lambda": 0.01})
    store = tmp_path / "refined.zarr"
    r = compress_scene(scene, store, **{**TINY, "checkpoint": ck}, refine_steps=2)
    assert r.written == 10
    assert TileStore.open(store).codec_meta["config"]["refine_steps"] == 2
    out = decompress_scene(store, tmp_path / "refined.tif", checkpoint=ck, processes=False,
                           progress=False)  # the decoder needs no refinement setting
    with rasterio.open(out) as b, rasterio.open(scene) as s:
        assert b.shape == s.shape and b.transform == s.transform
    with pytest.raises(StoreMismatchError, match="codec config"):  # resuming must not mix settings
        compress_scene(scene, store, **{**TINY, "checkpoint": ck})


def test_demo_runs_on_the_bundled_sample_without_a_data_folder(tmp_path, monkeypatch, capsys):
    """README's first command on a fresh clone: no shared data folder beside the repository."""
    from geocompress.cli import main

    monkeypatch.setenv("GEOCOMPRESS_DATA", str(tmp_path / "nowhere"))
    assert main(["--quiet", "demo", "--out", str(tmp_path / "demo"), "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "sample_aerial_korea_0.6m" in out and "psnr_db" in out
    assert list((tmp_path / "demo").glob("*_crop.png"))


def test_demo_on_a_scene_too_small_for_ms_ssim_says_so(tmp_path):
    """MS-SSIM needs 161 px on a side: a smaller scene's report says why it has none (it
    printed a bare nan)."""
    from geocompress.scene.roundtrip import roundtrip

    src = write_scene(tmp_path / "s.tif", natural_tile(32, 40, seed=8))
    report = roundtrip(src, tmp_path / "demo", **{**TINY, "processes": False, "progress": False})
    assert report["ms_ssim"].startswith("n/a: the scene is under 161 px")
    assert isinstance(report["psnr_db"], float) and report["georeferencing_preserved"]


def test_declared_bit_depth_sets_the_scaling_of_a_uint16_scene(tmp_path):
    data = natural_tile(64, 64, c=1, dtype=np.uint16, seed=6) // 4  # a dark 12-bit scene: < 1024
    src = tmp_path / "u12.tif"
    with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16",
                       crs="EPSG:32618", transform=from_origin(500000, 4200000, 10, 10),
                       NBITS=12) as ds:
        ds.write(data)
    r = compress_scene(src, tmp_path / "u12.zarr", **TINY)
    assert r.bits == 12


def test_cli_refuses_bad_numbers_clearly(capsys):
    from geocompress.cli import main

    for argv in (["compress", "a.tif", "b.zarr", "--bits", "abc"],
                 ["compress", "a.tif", "b.zarr", "--workers", "0"],
                 ["compress", "a.tif", "b.zarr", "--batch-size", "0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "expected" in err or "at least 1" in err


def test_cli_tile_size_is_bounded_with_a_clear_message(capsys):
    """Issue 36, item 8: `compress --tile 100000` had no upper bound and died with MemoryError."""
    from geocompress.cli import MAX_TILE, build_parser, main
    from geocompress.codec.tile_codec import MAX_DECODE_PIXELS

    assert MAX_TILE * MAX_TILE == MAX_DECODE_PIXELS  # the bound is what the codec can decode
    for bad in ("100000", "4097", "0", "-64", "8", "abc"):
        with pytest.raises(SystemExit) as e:
            main(["compress", "a.tif", "b.zarr", "--tile", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--tile" in err and ("64..4096" in err or "whole number" in err), err
    p = build_parser()
    assert [p.parse_args(["compress", "a.tif", "b.zarr", "--tile", t]).tile
            for t in ("64", "256", "4096")] == [64, 256, 4096]


def test_the_cli_parser_imports_no_torch():
    """`geocompress --help` answers at once: building the parser imports neither torch nor dask."""
    import subprocess
    import sys

    code = ("import sys, geocompress.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('torch', 'distributed', 'compressai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_quiet_is_accepted_after_the_command_too():
    from geocompress.cli import build_parser

    p = build_parser()
    assert p.parse_args(["info", "s.zarr", "--quiet"]).quiet
    assert p.parse_args(["--quiet", "decompress", "s.zarr", "o.tif"]).quiet
    assert not p.parse_args(["compress", "a.tif", "s.zarr"]).quiet


def test_xarray_opens_a_store_with_the_geocompress_engine(compressed, full_tif):
    import xarray as xr

    ds = xr.open_dataset(compressed[0], engine="geocompress")
    arr = ds["band_data"]
    assert arr.dims == ("band", "y", "x") and arr.rio.crs == CRS.from_epsg(32618)
    with rasterio.open(full_tif) as f:
        assert arr.rio.transform() == f.transform
        np.testing.assert_array_equal(arr[:, 10:40, 100:130].values, f.read()[:, 10:40, 100:130])
    assert arr.data.chunksize[1:] == (64, 64)  # one tile per chunk: a small read decodes little
    # xarray's CF decoders are accepted (they raised TypeError); masking by value is refused
    same = xr.open_dataset(compressed[0], engine="geocompress", mask_and_scale=False,
                           decode_times=False, decode_coords="all")
    assert same["band_data"].dtype == arr.dtype
    with pytest.raises(ValueError, match="does not mask by value"):
        xr.open_dataset(compressed[0], engine="geocompress", mask_and_scale=True)


def test_info_json_gives_numbers(compressed, capsys):
    import json

    from geocompress.cli import main

    assert main(["info", str(compressed[0]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert isinstance(info["width"], int) and isinstance(info["bpp"], float)
    assert info["tiles"]["WRITTEN"] == 10 and info["grid_rows"] * info["grid_cols"] == 12


def test_ctrl_c_ends_with_a_message_not_a_traceback(monkeypatch, capsys):
    import geocompress.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert cli.main(["info", "s.zarr"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_bits_that_do_not_fit_the_scene_are_refused(tmp_path, capsys):
    """Issue 36, messages: `--bits 7` on a uint8 scene was accepted (and silently coded with 8)."""
    from geocompress.cli import main

    src = write_scene(tmp_path / "u8.tif", natural_tile(64, 64, seed=3))
    for bits in (7, 9, 16):
        with pytest.raises(ValueError, match=r"--bits.*uint8 data is coded with its 8 bits"):
            compress_scene(src, tmp_path / "a.zarr", bits=bits, **TINY)
    u16 = write_scene(tmp_path / "u16.tif", natural_tile(64, 64, seed=3).astype(np.uint16))
    with pytest.raises(ValueError, match=r"--bits.*8\.\.16"):
        compress_scene(u16, tmp_path / "a.zarr", bits=7, **TINY)
    assert not (tmp_path / "a.zarr").exists()
    assert main(["compress", str(src), str(tmp_path / "a.zarr"), "--quiet", "--untrained",
                 "--arch", "mbt2018-mean", "--bits", "7"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("geocompress compress: error: bits=7 (--bits)") and "\n" not in err
    assert compress_scene(src, tmp_path / "b.zarr", bits=8, **TINY).bits == 8


def test_quality_help_explains_the_scale_of_the_default_codec(monkeypatch, capsys):
    """``--quality`` means a level 0..L-1 once a variable-rate model is the default, a quality
    1..Q while the fixed-rate ladder is: the help says which, and how to reach the other."""
    import geocompress.cli as cli

    def help_of(command: str) -> str:  # the text of --quality in ``command --help``
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        return text[text.index("--quality QUALITY ") + len("--quality QUALITY "):]

    for command in ("compress", "demo"):
        assert help_of(command).startswith("a shipped fixed-rate quality 1..Q") or \
            cli.DEFAULT_ARCH != "mgssnet"
    index = {"mgssnet-vr": {"file": "x.pt", "digest": "0" * 64, "levels": 14, "default": 7.0},
             "mgssnet": {"qualities": {"1": {}, "2": {}}}}
    monkeypatch.setattr(cli, "DEFAULT_ARCH", "mgssnet-vr")
    monkeypatch.setattr(cli, "shipped_index", lambda: index)
    for command in ("compress", "demo"):
        text = help_of(command)
        assert text.startswith("level 0..13 of the default mgssnet-vr (default: level 7)"), text
        # demo has no --arch: its help does not send users to one
        assert ("with --arch mgssnet, a shipped fixed-rate quality 1..Q" in text) == (
            command == "compress"), text
