"""A STAC Item describing a geocompress store.

The Item carries the projection extension for the scene pixel grid
(``proj:code`` when an authority code exists else ``proj:wkt2``,
``proj:transform`` in affine order, ``proj:shape`` [height, width],
``proj:bbox`` in the scene CRS), a lon/lat (EPSG:4326) geometry and bbox from
the densified scene outline, and one ``data`` asset pointing at the store
(media type ``application/vnd+zarr``).

:func:`write_stac_item` saves it *next to* the store, as a sibling file
``<store stem>.stac-item.json`` (``out/scene.zarr`` ->
``out/scene.stac-item.json``), with a relative asset href (``./scene.zarr``).
The geometry is the footprint of the valid data (``footprint.py``), counter-clockwise and cut
at the antimeridian (RFC 7946); the asset has ``raster:bands``, ``eo:bands`` and
``file:size`` / ``file:checksum``. Not inside the store: zarr warns about every non-Zarr object it finds when
listing a group (e.g. on each ``xarray.open_zarr``).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pystac
import shapely
from pystac.extensions.projection import ProjectionExtension
from shapely.geometry import mapping, shape
from shapely.geometry.base import BaseGeometry

from geocompress.geo.grid import TileGrid
from geocompress.geo.reproject import footprint_geojson
from geocompress.geo.source import SceneInfo
from geocompress.store._convention.zarr import corner_bbox, crs_code
from geocompress.store.identity import IDENTITY, from_stored, to_stored

STAC_SUFFIX = ".stac-item.json"
ZARR_MEDIA_TYPE = "application/vnd+zarr"


def make_stac_item(
    store_path: str | Path,
    scene: SceneInfo,
    grid: TileGrid,
    codec_meta: dict,
    datetime_: datetime | None = None,
    footprint: BaseGeometry | None = None,
) -> pystac.Item:
    """Build (not write) the Item. ``datetime_`` is the acquisition time if known; by default the
    source's ``TIFFTAG_DATETIME`` (or another acquisition tag), else the processing time, as
    rio-stac does; ``created`` is always the processing time. ``footprint``: the valid data in
    the scene CRS (:func:`.footprint.valid_footprint`); default the whole scene's outline.

    Args:
        store_path: the store (its name gives the Item's id; its files the checksum).
        scene: the source scene.
        grid: the tile grid.
        codec_meta: the codec's identity and settings, in either vocabulary
            (:mod:`geocompress.store.identity`).
        datetime_: the acquisition time, if known.
        footprint: the valid data in the scene CRS.

    Returns:
        The Item.
    """
    store_path = Path(store_path)
    codec = from_stored(codec_meta)
    identity = {k: codec.get(k) for k in IDENTITY}
    now = datetime.now(timezone.utc)
    found, source_key = (datetime_, "argument") if datetime_ else source_datetime(scene.tags)
    crs = grid.crs or scene.crs
    outline = grid.footprint()
    lon_lat = shape(footprint_geojson(outline, crs, "EPSG:4326"))
    x0, y0, x1, y1 = lon_lat.bounds  # half a pixel, in degrees: simplify no further than that
    half_pixel = 0.5 * max(x1 - x0, y1 - y0) / max(grid.width, grid.height)
    valid = outline if footprint is None else footprint
    geom = footprint_geojson(valid, crs, "EPSG:4326", tolerance=half_pixel) if not valid.is_empty \
        else mapping(lon_lat)
    bbox = [float(v) for v in shapely.bounds(shape(geom))]
    item = pystac.Item(
        id=store_path.name.removesuffix(".zarr") or scene.name,
        geometry=geom,
        bbox=bbox,
        datetime=found or now,
        properties={
            "created": now.isoformat().replace("+00:00", "Z"),
            "geocompress:datetime_from": source_key or "processing time (the source has no date tag)",
            "geocompress:source": scene.name,
            "geocompress:source_checksum": scene.checksum,
            **{f"geocompress:{k}": v for k, v in to_stored(identity).items()},
            **({"geocompress:rate_control": codec_meta["config"]["rate_control"]}
               if codec_meta.get("config", {}).get("rate_control") else {}),
            "geocompress:tile": grid.tile,
            "geocompress:stride": grid.step,
        },
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    code = crs_code(crs)
    proj.code = code
    if code is None:
        proj.wkt2 = crs.to_wkt(version="WKT2_2019")
    proj.transform = [float(v) for v in grid.transform[:6]]
    proj.shape = [grid.height, grid.width]
    proj.bbox = corner_bbox(grid.transform, grid.height, grid.width)
    asset = pystac.Asset(href=str(store_path.resolve()), media_type=ZARR_MEDIA_TYPE, roles=["data"],
                         title=f"geocompress tile store of {scene.name}")
    asset.extra_fields["raster:bands"] = raster_bands(scene)
    eo = eo_bands(scene)
    if eo:
        asset.extra_fields["eo:bands"] = eo
        item.stac_extensions.append(EO_EXTENSION)
    if store_path.is_dir():
        asset.extra_fields.update(file_fields(store_path))
        item.stac_extensions.append(FILE_EXTENSION)
    item.add_asset("zarr", asset)
    item.stac_extensions.append(RASTER_EXTENSION)
    return item


def eo_bands(scene: SceneInfo) -> list[dict]:
    """The eo extension's bands, as rio-stac writes them: a name per band and, where the source's
    colour interpretation says, its common name (red, green, blue; alpha is not a band of the
    scene's spectrum and gets none).

    Args:
        scene: the source scene.

    Returns:
        One dict per band.
    """
    common = {"red": "red", "green": "green", "blue": "blue"}
    out = []
    for k in range(scene.count):
        name = scene.band_names[k] if k < len(scene.band_names) and scene.band_names[k] else f"b{k + 1}"
        band = {"name": name}
        ci = str(scene.colorinterp[k]).lower() if k < len(scene.colorinterp) else ""
        if ci in common:
            band["common_name"] = common[ci]
        out.append(band)
    return out


def file_fields(store_path: Path) -> dict:
    """``file:size`` (every byte of the store) and ``file:checksum``: a sha2-256 multihash over
    the store's files (relative path and bytes, in sorted order); a store is a folder, so this
    is the digest of its manifest, which any reader can recompute with :func:`store_checksum`.

    Args:
        store_path: the store folder.

    Returns:
        ``{"file:size": ..., "file:checksum": ...}``.
    """
    size, digest = store_checksum(store_path)
    return {"file:size": size, "file:checksum": "1220" + digest}


def store_checksum(store_path: Path) -> tuple[int, str]:
    """(total bytes, hex sha256) of every file under ``store_path``, in sorted relative order.

    Args:
        store_path: the store folder.

    Returns:
        ``(total bytes, hex digest)``.
    """
    h = hashlib.sha256()
    total = 0
    for f in sorted(p for p in Path(store_path).rglob("*") if p.is_file()):
        rel = f.relative_to(store_path).as_posix().encode()
        h.update(len(rel).to_bytes(4, "big") + rel)
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
                total += len(chunk)
    return total, h.hexdigest()


RASTER_EXTENSION = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
EO_EXTENSION = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
DATE_TAGS = ("TIFFTAG_DATETIME", "ACQUISITIONDATETIME", "ACQUISITION_DATE", "DATE_ACQUIRED",
             "SENSING_TIME", "DATETIME")


def source_datetime(tags: dict) -> tuple[datetime | None, str | None]:
    """The first date tag of the source that parses (TIFF's ``YYYY:MM:DD HH:MM:SS`` or ISO).

    Args:
        tags: the source's GDAL tags.

    Returns:
        ``(datetime in UTC, tag name)``, or ``(None, None)`` when no tag parses.
    """
    upper = {str(k).upper(): str(v) for k, v in (tags or {}).items()}
    for key in DATE_TAGS:
        text = upper.get(key)
        if not text:
            continue
        for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                return datetime.strptime(text.strip().rstrip("Z")[:19], fmt).replace(
                    tzinfo=timezone.utc), key
            except ValueError:
                continue
    return None, None


def raster_bands(scene: SceneInfo) -> list[dict]:
    """The raster extension's per-band description, as rio-stac writes it.

    Args:
        scene: the source scene.

    Returns:
        One dict per band: data type, and nodata, scale, offset, unit where the source has them.
    """
    out = []
    for k in range(scene.count):
        band = {"data_type": scene.dtype}
        if scene.nodata is not None:
            band["nodata"] = scene.nodata
        if k < len(scene.scales) and scene.scales[k] != 1.0:
            band["scale"] = scene.scales[k]
        if k < len(scene.offsets) and scene.offsets[k] != 0.0:
            band["offset"] = scene.offsets[k]
        if k < len(scene.units) and scene.units[k]:
            band["unit"] = scene.units[k]
        out.append(band)
    return out


def write_stac_item(
    store_path: str | Path, scene: SceneInfo, grid: TileGrid, codec_meta: dict,
    datetime_: datetime | None = None, achieved_bpp: float | None = None,
) -> Path:
    """Write the Item next to the store (see module docstring); returns its path.
    ``achieved_bpp`` (tile bytes over the scene's pixels) is recorded when given.

    Args:
        store_path: the store.
        scene: the source scene.
        grid: the tile grid.
        codec_meta: as :func:`make_stac_item`.
        datetime_: the acquisition time, if known.
        achieved_bpp: the store's bits per pixel.

    Returns:
        The Item's path (:func:`stac_item_path`).
    """
    store_path = Path(store_path)
    footprint = None
    if (store_path / "zarr.json").exists():
        from .footprint import valid_footprint
        from .tile_store import TileStore

        footprint = valid_footprint(TileStore.open(store_path, "r"))
    item = make_stac_item(store_path, scene, grid, codec_meta, datetime_, footprint)
    if achieved_bpp is not None:
        item.properties["geocompress:bpp"] = achieved_bpp
    dest = stac_item_path(store_path)
    item.assets["zarr"].href = f"./{store_path.name}"
    item.save_object(include_self_link=False, dest_href=str(dest))
    return dest


def stac_item_path(store_path: str | Path) -> Path:
    """Where :func:`write_stac_item` puts the Item for ``store_path``.

    Args:
        store_path: the store.

    Returns:
        ``<store stem>.stac-item.json`` beside it.
    """
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + STAC_SUFFIX)
