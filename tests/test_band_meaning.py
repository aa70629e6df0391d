"""Band meaning round-trips: a 4-band R, G, B, NIR scene does not come back as RGBA (issue 25, 6)."""

import pytest
import rasterio
from rasterio.enums import ColorInterp

from geocompress.geo import open_scene
from geocompress.scene import OutputSpec, compress_scene, decompress_scene

from .conftest import natural_tile
from .test_scene import TINY, write_scene


def test_colour_interpretation_descriptions_scales_and_tags_round_trip(tmp_path):
    data = natural_tile(64, 128, c=4, seed=9)
    interp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
    src = write_scene(tmp_path / "rgbn.tif", data)
    with rasterio.open(src, "r+") as ds:
        ds.colorinterp = interp
        for k, name in enumerate(["red", "green", "blue", "nir"], 1):
            ds.set_band_description(k, name)
        ds.scales = [0.0001] * 4
        ds.offsets = [-0.1] * 4
        ds.units = ["reflectance"] * 4
        ds.update_tags(TIFFTAG_DATETIME="2020:05:18 10:00:00", SENSOR="test")
    assert not open_scene(src).has_mask
    compress_scene(src, tmp_path / "s.zarr", **TINY)
    for cog in (False, True):
        out = decompress_scene(tmp_path / "s.zarr", tmp_path / f"o{cog}.tif", processes=False,
                               progress=False, output=OutputSpec(cog=cog))
        with rasterio.open(out) as o:
            assert list(o.colorinterp) == interp
            assert list(o.descriptions) == ["red", "green", "blue", "nir"]
            assert o.scales == (0.0001,) * 4 and o.offsets == (-0.1,) * 4
            assert o.units == ("reflectance",) * 4
            assert o.tags()["SENSOR"] == "test" and o.tags()["TIFFTAG_DATETIME"].startswith("2020")
        again = open_scene(out)
        assert not again.has_mask  # NIR is not mistaken for an alpha band on the way back in
        assert again.colorinterp[3] == "undefined"


def test_stac_item_takes_the_acquisition_time_and_band_facts_from_the_source(tmp_path):
    import json

    from geocompress.store.stac import stac_item_path

    src = write_scene(tmp_path / "t.tif", natural_tile(64, 64, seed=2))
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(TIFFTAG_DATETIME="2020:05:18 10:11:12")
        ds.scales = [0.5] * 3
    store = tmp_path / "t.zarr"
    compress_scene(src, store, **TINY)
    item = json.loads(stac_item_path(store).read_text())
    assert item["properties"]["datetime"].startswith("2020-05-18T10:11:12")
    assert item["properties"]["created"] > "2026"
    bands = item["assets"]["zarr"]["raster:bands"]
    assert len(bands) == 3 and bands[0]["data_type"] == "uint8" and bands[0]["scale"] == 0.5
    assert any("raster" in e for e in item["stac_extensions"])


def test_decompress_writes_chosen_bands_with_their_meaning(tmp_path):
    data = natural_tile(64, 64, c=4, seed=3)
    src = write_scene(tmp_path / "b.tif", data)
    with rasterio.open(src, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined]
        for k, name in enumerate(["red", "green", "blue", "nir"], 1):
            ds.set_band_description(k, name)
    compress_scene(src, tmp_path / "b.zarr", **TINY)
    kw = dict(processes=False, progress=False)
    full = decompress_scene(tmp_path / "b.zarr", tmp_path / "all.tif", output=OutputSpec(cog=False), **kw)
    part = decompress_scene(tmp_path / "b.zarr", tmp_path / "nir_red.tif", output=OutputSpec(cog=False, bands=(4, 1)),
                            **kw)
    with rasterio.open(full) as f, rasterio.open(part) as p:
        assert p.count == 2 and list(p.descriptions) == ["nir", "red"]
        assert (p.read(1) == f.read(4)).all() and (p.read(2) == f.read(1)).all()
    with pytest.raises(ValueError, match="out of range"):
        decompress_scene(tmp_path / "b.zarr", tmp_path / "x.tif", output=OutputSpec(cog=False, bands=(5,)),
                         **kw)


def test_band_tags_other_domains_and_empty_descriptions_round_trip(tmp_path):
    """Issue 36, item 3: band-level tags (WAVELENGTH) and tags in other metadata domains were
    dropped, and empty band descriptions came back invented as band_1..band_N."""
    src = write_scene(tmp_path / "t.tif", natural_tile(64, 64, c=3, seed=4))
    with rasterio.open(src, "r+") as ds:
        ds.set_band_description(2, "green")
        for b, nm in enumerate(("665", "560", "490"), 1):
            ds.update_tags(b, WAVELENGTH=nm, WAVELENGTH_UNITS="nm")
        ds.update_tags(ns="IMAGERY", CLOUDCOVER="12.5", SATELLITEID="S2A")
        ds.update_tags(ns="VENDOR", PRODUCT="L2A")
    compress_scene(src, tmp_path / "s.zarr", **TINY)
    # a COG keeps the domains or the band tags, not both (GDAL 3.10), and says so
    with pytest.warns(UserWarning, match="IMAGERY, VENDOR cannot be copied into a COG"):
        decompress_scene(tmp_path / "s.zarr", tmp_path / "cog.tif", processes=False, progress=False)
    for cog in (False,):
        out = decompress_scene(tmp_path / "s.zarr", tmp_path / f"o{cog}.tif", processes=False,
                               progress=False, output=OutputSpec(cog=cog))
        with rasterio.open(out) as o:
            assert list(o.descriptions) == [None, "green", None]
            assert [o.tags(b).get("WAVELENGTH") for b in (1, 2, 3)] == ["665", "560", "490"]
            assert o.tags(1)["WAVELENGTH_UNITS"] == "nm"
            assert o.tags(ns="IMAGERY") == {"CLOUDCOVER": "12.5", "SATELLITEID": "S2A"}
            assert o.tags(ns="VENDOR") == {"PRODUCT": "L2A"}
    picked = decompress_scene(tmp_path / "s.zarr", tmp_path / "b.tif", processes=False,
                              progress=False, output=OutputSpec(bands=(3, 2), cog=False))
    with rasterio.open(picked) as o:  # -b keeps each band's own
        assert list(o.descriptions) == [None, "green"]
        assert [o.tags(b)["WAVELENGTH"] for b in (1, 2)] == ["490", "560"]


def test_metadata_domains_reach_a_cog_when_there_are_no_band_tags(tmp_path):
    src = write_scene(tmp_path / "d.tif", natural_tile(64, 64, c=3, seed=5))
    with rasterio.open(src, "r+") as ds:
        ds.update_tags(ns="IMAGERY", CLOUDCOVER="3")
    compress_scene(src, tmp_path / "d.zarr", **TINY)
    out = decompress_scene(tmp_path / "d.zarr", tmp_path / "d_out.tif", processes=False, progress=False)
    with rasterio.open(out) as o:
        assert o.tags(ns="IMAGERY") == {"CLOUDCOVER": "3"}
        assert list(o.descriptions) == [None, None, None]
