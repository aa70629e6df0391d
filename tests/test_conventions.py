"""The store's metadata as the published conventions define it, checked by their maintained
implementations: zarr-cm (proj, spatial), pyproj's CF mapping, xarray / rioxarray."""

import json
import warnings

import pytest
import rioxarray  # noqa: F401 - registers .rio
import xarray as xr
import zarr_cm
from pyproj import CRS as ProjCRS

from geocompress.scene import compress_scene

from .conftest import natural_tile
from .test_scene import TINY, write_scene


@pytest.fixture(scope="module", params=["EPSG:32618", "EPSG:3857"])
def store(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("conv")
    src = write_scene(d / "s.tif", natural_tile(128, 128, seed=4), crs=request.param)
    compress_scene(src, d / "s.zarr", **TINY)
    return d / "s.zarr", request.param


def test_proj_and_spatial_validate_with_zarr_cm(store):
    path, crs = store
    root = json.loads((path / "zarr.json").read_text())
    zarr_cm.proj.validate_group_metadata(root)
    zarr_cm.spatial.validate_group_metadata(root)
    attrs = root["attributes"]
    assert attrs["proj:code"] == crs and "proj:wkt2" not in attrs  # exactly one of the two
    for name in ("tiles", "status", "constant", "masks"):
        zarr_cm.spatial.validate_array_metadata(json.loads((path / name / "zarr.json").read_text()))


def test_cf_grid_mapping_is_what_pyproj_gives_plus_the_wkt(store):
    path, crs = store
    sr = json.loads((path / "spatial_ref" / "zarr.json").read_text())["attributes"]
    cf = {k: v for k, v in ProjCRS.from_user_input(crs).to_cf().items() if v is not None}
    if crs == "EPSG:32618":
        assert sr["grid_mapping_name"] == "transverse_mercator"
    for k, v in cf.items():  # the mapping's parameters (names of datums may differ in wording)
        if k == "grid_mapping_name" or isinstance(v, float):
            assert sr[k] == pytest.approx(v), k
    assert ProjCRS.from_wkt(sr["crs_wkt"]) == ProjCRS.from_user_input(crs)


def test_xarray_opens_consolidated_without_warnings_and_rioxarray_reads_the_crs(store):
    path, crs = store
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, decode_coords="all")
    assert ds["status"].rio.crs == crs
