"""decompress writes what GDAL users ask for: driver from the extension, dtype, overviews, and
never a format that would drop which pixels are valid."""

import contextlib

import numpy as np
import pytest
import rasterio

from geocompress.cli import main
from geocompress.scene import compress_scene, decompress_scene
from geocompress.scene.output import OutputSpec, cast_pixels

from .conftest import natural_tile
from .test_scene import TINY, write_scene

KW = dict(processes=False, progress=False)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmt")
    plain = natural_tile(128, 128, seed=11)
    src = write_scene(d / "plain.tif", plain)
    compress_scene(src, d / "plain.zarr", **TINY)
    holes = natural_tile(128, 128, seed=12)
    holes[:, :30, :40] = 0
    src = write_scene(d / "nodata.tif", holes, nodata=0)
    compress_scene(src, d / "nodata.zarr", **TINY)
    return d


def test_png_by_extension_keeps_pixels_and_georeferencing(stores, tmp_path):
    tif = decompress_scene(stores / "plain.zarr", tmp_path / "a.tif", output=OutputSpec(cog=False), **KW)
    png = decompress_scene(stores / "plain.zarr", tmp_path / "a.png", **KW)
    with rasterio.open(tif) as a, rasterio.open(png) as b:
        assert b.driver == "PNG"
        np.testing.assert_array_equal(a.read(), b.read())
        assert b.crs == a.crs and b.transform == a.transform  # from the .aux.xml sidecar
    # the sidecar arrived with it, and nothing temporary is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a.png.aux.xml", "a.tif"]


def test_explicit_driver_and_unknown_ones(stores, tmp_path):
    out = decompress_scene(stores / "plain.zarr", tmp_path / "a.bin",
                           output=OutputSpec(driver="ENVI"), **KW)
    with rasterio.open(out) as o:
        assert o.driver == "ENVI" and o.count == 3
    with pytest.raises(ValueError, match="not available"):
        decompress_scene(stores / "plain.zarr", tmp_path / "b.tif",
                         output=OutputSpec(driver="NoSuchDriver"), **KW)


def test_formats_that_would_lose_nodata_are_refused(stores, tmp_path):
    with pytest.raises(ValueError, match="nodata = 0.*JPEG"):
        decompress_scene(stores / "nodata.zarr", tmp_path / "n.jpg", **KW)
    assert not list(tmp_path.iterdir())  # refused before any decoding or file
    out = decompress_scene(stores / "nodata.zarr", tmp_path / "n.png", **KW)
    with rasterio.open(out) as o:  # PNG keeps nodata (tRNS)
        assert o.nodata == 0 and (o.dataset_mask()[:30, :40] == 0).all()


def test_dtype_widen_and_narrow_with_a_count_of_clipped_values(stores, tmp_path):
    ref = decompress_scene(stores / "plain.zarr", tmp_path / "r.tif", output=OutputSpec(cog=False), **KW)
    wide = decompress_scene(stores / "plain.zarr", tmp_path / "w.tif",
                            output=OutputSpec(dtype="float32", cog=False), **KW)
    with rasterio.open(ref) as a, rasterio.open(wide) as b:
        assert b.dtypes[0] == "float32"
        np.testing.assert_array_equal(a.read().astype(np.float32), b.read())
    px, n = cast_pixels(np.array([[[-3, 5, 300]]], np.int16), np.dtype("uint8"))
    assert px.tolist() == [[[0, 5, 255]]] and n == 2
    _, n = cast_pixels(np.array([[[-3, 5, 300]]], np.int16), np.dtype("uint8"),
                       valid=np.array([[False, True, True]]))
    assert n == 1  # invalid pixels are not counted
    with pytest.raises(ValueError, match="--dtype"):
        OutputSpec(dtype="uint7").resolve(tmp_path / "x.tif")


def test_overview_levels_and_resampling(stores, tmp_path):
    out = decompress_scene(stores / "plain.zarr", tmp_path / "o.tif",
                           output=OutputSpec(overviews=(2, 4), resampling="nearest"), **KW)
    with rasterio.open(out) as o:
        assert o.overviews(1) == [2, 4]
    out = decompress_scene(stores / "plain.zarr", tmp_path / "n.tif",
                           output=OutputSpec(overviews="none"), **KW)
    with rasterio.open(out) as o:
        assert o.overviews(1) == []


def test_cli_options(stores, tmp_path, capsys):
    out = tmp_path / "c.tif"
    assert main(["decompress", str(stores / "plain.zarr"), str(out), "--quiet", "-ot", "uint16",
                 "--overviews", "2", "-r", "nearest", "-b", "2", "1"]) == 0
    with rasterio.open(out) as o:
        assert o.count == 2 and o.dtypes[0] == "uint16" and o.overviews(1) == [2]
    assert main(["decompress", str(stores / "plain.zarr"), str(tmp_path / "c.png"), "--quiet",
                 "--driver", "PNG"]) == 0


def test_quiet_commands_print_nothing_but_their_result(stores, tmp_path):
    """No dependency warnings (torch.jit, zarr's bytes dtype) from the CLI or its workers, also
    with another job's cluster on the machine (its port 8787 taken: held here)."""
    import socket
    import subprocess
    import sys

    src = stores / "plain.tif"
    held = socket.socket()
    try:
        held.bind(("", 8787))
        held.listen()
    except OSError:  # taken already: all the better
        pass
    try:
        r = subprocess.run([sys.executable, "-m", "geocompress.cli", "compress", str(src),
                            str(tmp_path / "q.zarr"), "--quiet", "--untrained", "--workers", "1"],
                           capture_output=True, text=True, timeout=600)
    finally:
        held.close()
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run([sys.executable, "-m", "geocompress.cli", "decompress", str(tmp_path / "q.zarr"),
                        str(tmp_path / "q.tif"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stderr == "" and r.stdout.strip().endswith("q.tif"), r.stderr


@pytest.fixture(scope="module")
def five_bands(tmp_path_factory):
    d = tmp_path_factory.mktemp("five")
    src = write_scene(d / "five.tif", natural_tile(64, 64, c=5, seed=13))
    compress_scene(src, d / "five.zarr", **TINY)
    return d / "five.zarr"


@pytest.mark.parametrize("ext, driver, counts", [(".png", "PNG", "1, 2, 3 or 4"),
                                                 (".jpg", "JPEG", "1, 3 or 4"),
                                                 (".webp", "WEBP", "3 or 4")])
def test_too_many_bands_for_the_format_are_refused_before_decoding(five_bands, tmp_path, capsys,
                                                                   monkeypatch, ext, driver, counts):
    """Issue 36, item 9: five bands to PNG / JPEG / WebP decoded the whole scene, then ended in an
    uncaught CPLE_NotSupportedError traceback."""
    import geocompress.scene.mosaic as mosaic

    def no_decoding(*a, **k):
        raise AssertionError("decoded before refusing")

    out = tmp_path / f"o{ext}"
    monkeypatch.setattr(mosaic, "decode_region", no_decoding)
    with pytest.raises(ValueError, match=f"{driver} holds {counts} bands, not 5: .*-b 1 2 3"):
        decompress_scene(five_bands, out, **KW)
    assert main(["decompress", str(five_bands), str(out), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("geocompress decompress: error:") and "\n" not in err
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    lossy = driver != "PNG"  # JPEG and WebP change pixels: written only when asked (item 4)
    with pytest.warns(UserWarning, match="lossy") if lossy else contextlib.nullcontext():
        picked = decompress_scene(five_bands, out, output=OutputSpec(bands=(1, 2, 3),
                                                                     allow_lossy=lossy), **KW)
    with rasterio.open(picked) as o:
        assert o.count == 3 and o.driver == driver


def test_band_counts_a_format_cannot_hold_name_what_it_can():
    from geocompress.scene.output import check_band_count

    with pytest.raises(ValueError, match="JPEG holds 1, 3 or 4 bands, not 2: .*-b 1\\)"):
        check_band_count(OutputSpec(driver="JPEG"), 2)
    with pytest.raises(ValueError, match="WEBP holds 3 or 4 bands, not 1: write a GeoTIFF"):
        check_band_count(OutputSpec(driver="WEBP"), 1)
    for driver, n in (("PNG", 4), ("JPEG", 1), ("WEBP", 3), ("GTiff", 12)):
        check_band_count(OutputSpec(driver=driver), n)


def _no_decoding(monkeypatch):
    import geocompress.scene.mosaic as mosaic

    def never(*a, **k):
        raise AssertionError("decoded before refusing")

    monkeypatch.setattr(mosaic, "decode_region", never)


def test_lossy_outputs_and_options_are_refused_before_decoding(stores, tmp_path, monkeypatch, capsys):
    """Issue 36, item 4: --co COMPRESS=JPEG wrote nodata pixels as valid; lossy outputs changed
    the decoded values with no word. Refused before decoding, or (--lossy, no nodata) warned."""
    _no_decoding(monkeypatch)
    for store, opts in (("nodata.zarr", {"COMPRESS": "JPEG"}), ("plain.zarr", {"COMPRESS": "JPEG"}),
                        ("plain.zarr", {"COMPRESS": "WEBP"}), ("plain.zarr", {"NBITS": "4"}),
                        ("plain.zarr", {"COMPRESS": "LERC", "MAX_Z_ERROR": "2"})):
        with pytest.raises(ValueError, match="lossy|drops bits"):
            decompress_scene(stores / store, tmp_path / "j.tif",
                             output=OutputSpec(creation_options=opts), **KW)
    with pytest.raises(ValueError, match="nodata pixels would read as valid"):  # even with --lossy
        decompress_scene(stores / "nodata.zarr", tmp_path / "j.tif",
                         output=OutputSpec(creation_options={"COMPRESS": "JPEG"}, allow_lossy=True), **KW)
    for argv in (["--co", "COMPRESS=JPEG"], ["--co", "COMPRESS=JPEG", "--lossy"]):
        assert main(["decompress", str(stores / "nodata.zarr"), str(tmp_path / "j.tif"), "--quiet",
                     *argv]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("geocompress decompress: error: COMPRESS=JPEG is lossy") and "\n" not in err
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="COMPRESS=JPEG is lossy"):
        out = decompress_scene(stores / "plain.zarr", tmp_path / "j.tif", **KW,
                               output=OutputSpec(creation_options={"COMPRESS": "JPEG"}, allow_lossy=True))
    with rasterio.open(out) as o:
        assert o.compression.name == "jpeg"


def test_jp2_output_is_lossless_and_keeps_nodata(stores, tmp_path):
    """Issue 36, item 4: .jp2 differed by up to 4 from the .tif output and lost the nodata mask."""
    tif = decompress_scene(stores / "nodata.zarr", tmp_path / "a.tif", output=OutputSpec(cog=False), **KW)
    jp2 = decompress_scene(stores / "nodata.zarr", tmp_path / "a.jp2", **KW)
    with rasterio.open(tif) as a, rasterio.open(jp2) as b:
        assert b.driver == "JP2OpenJPEG"
        np.testing.assert_array_equal(a.read(), b.read())
        np.testing.assert_array_equal(a.dataset_mask(), b.dataset_mask())
        assert b.nodata == 0 and (b.dataset_mask()[:30, :40] == 0).all()
    with pytest.raises(ValueError, match="JPEG 2000 .* lossy"):
        decompress_scene(stores / "plain.zarr", tmp_path / "b.jp2",
                         output=OutputSpec(creation_options={"QUALITY": "50"}), **KW)


def test_four_data_bands_are_not_written_to_png_as_alpha(tmp_path, monkeypatch):
    """Issue 36, item 4: four data bands to PNG made band 4 the alpha channel (transparency)."""
    from rasterio.enums import ColorInterp as CI

    src = write_scene(tmp_path / "rgbn.tif", natural_tile(64, 64, c=4, seed=14))
    with rasterio.open(src, "r+") as ds:
        ds.colorinterp = [CI.red, CI.green, CI.blue, CI.undefined]
    compress_scene(src, tmp_path / "rgbn.zarr", **TINY)
    _no_decoding(monkeypatch)
    with pytest.raises(ValueError, match="band 4 as alpha.*-b 1 2 3"):
        decompress_scene(tmp_path / "rgbn.zarr", tmp_path / "o.png", **KW)
    with pytest.raises(ValueError, match="band 2 as alpha"):
        decompress_scene(tmp_path / "rgbn.zarr", tmp_path / "o.png", output=OutputSpec(bands=(1, 4)),
                         **KW)
    assert not (tmp_path / "o.png").exists()
    monkeypatch.undo()
    out = decompress_scene(tmp_path / "rgbn.zarr", tmp_path / "o.png",
                           output=OutputSpec(bands=(1, 2, 3)), **KW)
    with rasterio.open(out) as o:
        assert o.count == 3


def test_option_errors_name_their_option(stores, tmp_path, monkeypatch, capsys):
    """Issue 36, messages: `--halo abc` ended in int()'s 'invalid literal', `--bbox-crs nonsense`
    in a PROJ message about WKT; neither named the option."""
    with pytest.raises(SystemExit) as e:
        main(["compress", str(stores / "plain.tif"), str(tmp_path / "h.zarr"), "--halo", "abc"])
    assert e.value.code == 2 and "argument --halo" in capsys.readouterr().err
    from geocompress.scene.halo import resolve_halo

    with pytest.raises(ValueError, match="halo must be 0..255"):
        resolve_halo("abc", "mgssnet", 3, True, None)
    _no_decoding(monkeypatch)
    assert main(["decompress", str(stores / "plain.zarr"), str(tmp_path / "b.tif"), "--quiet",
                 "--bbox", "0", "0", "1", "1", "--bbox-crs", "nonsense"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("geocompress decompress: error: --bbox-crs 'nonsense'") and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_unknown_creation_options_are_refused_before_decoding(stores, tmp_path, monkeypatch, capsys):
    """Issue 36, messages: `--co COMPRESS=NOPE` and `--co FOO=BAR` exited 0 (GDAL warned, ignored
    them and wrote its default); `--co BAD` had no `geocompress decompress: error:` prefix."""
    _no_decoding(monkeypatch)
    for out, co, said in (("c.tif", "COMPRESS=NOPE", "COMPRESS"), ("c.tif", "FOO=BAR", "FOO"),
                          ("c.png", "FOO=BAR", "FOO"), ("c.png", "ZLEVEL=abc", "ZLEVEL"),
                          ("c.tif", "BAD", "NAME=VALUE")):
        for extra in ([], ["--no-cog"]):
            assert main(["decompress", str(stores / "plain.zarr"), str(tmp_path / out), "--quiet",
                         "--co", co, *extra]) == 1, co
            err = capsys.readouterr().err.strip()
            assert err.startswith("geocompress decompress: error: --co ") and said in err, err
            assert "\n" not in err, err
    assert not list(tmp_path.iterdir())
    monkeypatch.undo()
    out = tmp_path / "z.tif"
    assert main(["decompress", str(stores / "plain.zarr"), str(out), "--quiet",
                 "--co", "COMPRESS=ZSTD", "--co", "LEVEL=9"]) == 0
    with rasterio.open(out) as o:
        assert o.compression.name == "zstd"
    assert main(["decompress", str(stores / "plain.zarr"), str(tmp_path / "p.png"), "--quiet",
                 "--co", "ZLEVEL=9"]) == 0


def test_a_window_beyond_the_scene_is_cut_with_a_warning(stores, tmp_path):
    """Issue 36, messages: a --window reaching past the scene was cut without a word."""
    with pytest.warns(UserWarning, match=r"beyond the 128 x 128 scene: cut to 100 0 28 128"):
        out = decompress_scene(stores / "plain.zarr", tmp_path / "w.tif", window=(100, 0, 64, 500),
                               **KW)
    with rasterio.open(out) as o:
        assert (o.width, o.height) == (28, 128)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decompress_scene(stores / "plain.zarr", tmp_path / "x.tif", window=(0, 0, 64, 64), **KW)
