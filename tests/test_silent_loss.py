"""Nothing silently lost (issue 36): what a store cannot give back is refused before any work,
and what it can (band metadata, validity) comes back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geocompress.cli import main
from geocompress.geo import open_scene
from geocompress.scene import compress_scene

from .conftest import natural_tile
from .test_scene import TINY, write_scene


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_a_palette_raster_is_refused_before_any_work(tmp_path, capsys):
    """Item 1: a paletted GeoTIFF of class indices came back lossy-coded, without its table."""
    classes = (natural_tile(64, 64, c=1, seed=1) // 64).astype(np.uint8)
    src = write_scene(tmp_path / "classes.tif", classes)
    with rasterio.open(src, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 0, 0, 255), 2: (0, 255, 0, 255),
                              3: (0, 0, 255, 255)})
    with pytest.raises(ValueError, match="palette"):
        compress_scene(src, tmp_path / "s.zarr", **TINY)
    assert not (tmp_path / "s.zarr").exists()
    err = _one_line_error(capsys, ["--quiet", "compress", str(src), str(tmp_path / "c.zarr"),
                                   "--untrained"])
    assert err.startswith("geocompress compress: error:") and "palette" in err, err
    assert not (tmp_path / "c.zarr").exists()


def _per_band_nodata_vrt(tmp_path) -> str:
    """A VRT over a 2-band GeoTIFF whose band 1 nodata is 0 and band 2 nodata is 255."""
    data = natural_tile(64, 64, c=2, seed=3)
    data[0, :8] = 0
    data[1, -8:] = 255
    tif = write_scene(tmp_path / "two.tif", data)
    bands = "".join(f"""
  <VRTRasterBand dataType="Byte" band="{b}">
    <NoDataValue>{nd}</NoDataValue>
    <SimpleSource><SourceFilename relativeToVRT="1">two.tif</SourceFilename>
      <SourceBand>{b}</SourceBand></SimpleSource>
  </VRTRasterBand>""" for b, nd in ((1, 0), (2, 255)))
    with rasterio.open(tif) as ds:
        srs, gt = ds.crs.to_wkt(), ", ".join(map(str, ds.transform.to_gdal()))
    vrt = tmp_path / "per_band.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="64" rasterYSize="64"><SRS>{srs}</SRS>'
                   f'<GeoTransform>{gt}</GeoTransform>{bands}\n</VRTDataset>')
    with rasterio.open(vrt) as ds:
        assert ds.nodatavals == (0.0, 255.0)
    return str(vrt)


def test_per_band_nodata_is_refused_rather_than_coded_with_band_1s_value(tmp_path, capsys):
    """Item 2: band 2's nodata pixels came back valid, with band 1's nodata on every band."""
    vrt = _per_band_nodata_vrt(tmp_path)
    with pytest.raises(ValueError, match="band 1: 0, band 2: 255"):
        open_scene(vrt)
    err = _one_line_error(capsys, ["--quiet", "compress", vrt, str(tmp_path / "c.zarr"),
                                   "--untrained"])
    assert "nodata value per band" in err, err
    assert not (tmp_path / "c.zarr").exists()
