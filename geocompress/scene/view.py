"""A store opened as a lazy, dask-backed ``xarray.DataArray`` of decoded pixels.

Chunks are aligned to tiles (``chunk_tiles`` x ``chunk_tiles`` tiles per chunk), so slicing a
region decodes only the tiles it touches, on whatever Dask scheduler the user computes with.
Georeferencing follows rioxarray: ``x`` / ``y`` pixel-centre coordinates (for unrotated grids), a
``spatial_ref`` coordinate with the CRS and GeoTransform, ``_FillValue`` from the source nodata.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr

from ..store import StoreError, TileStore
from .mosaic import decode_region, store_spec

PathLike = str | Path


def _chunk(store: str, window: tuple[int, int, int, int], spec: dict) -> np.ndarray:
    return decode_region(store, window, spec)[0]


def open_dataarray(store: PathLike, chunk_tiles: int = 1, checkpoint: str | None = None,
                   precision: str = "auto", allow_incomplete: bool = False) -> xr.DataArray:
    """A lazy, dask-backed view of a store's decoded pixels, georeferenced as rioxarray reads a
    raster: one chunk per ``chunk_tiles`` x ``chunk_tiles`` tiles, so that a small region read
    decodes only the tiles it touches, on whatever Dask scheduler the caller computes with.

    Args:
        store: the store's folder.
        chunk_tiles: tiles per chunk side.
        checkpoint: the weights the store was written with, if not shipped.
        precision: the transforms' mode (any mode decodes any store); ``auto`` decodes as
            ``decompress`` does: without torch where ONNX Runtime is installed
            (:func:`~geocompress.scene.workers.get_decoder`).
        allow_incomplete: open a store whose compress run did not finish; its missing tiles read
            as the fill value (the view has no mask: prefer ``decompress_scene`` for such a store).

    Returns:
        A ``(band, y, x)`` DataArray with ``x`` / ``y`` pixel-centre coordinates (unrotated grids),
        the CRS and transform in ``spatial_ref``, and the source's nodata as ``_FillValue``.

    Raises:
        StoreError: not a store, or an incomplete one without ``allow_incomplete``.
        StoreIntegrityError: damaged bookkeeping, naming the array.

    Examples:
        >>> import tempfile, numpy as np, rasterio
        >>> from rasterio.transform import from_origin
        >>> from geocompress.scene import compress_scene, open_dataarray
        >>> folder, rng = tempfile.mkdtemp(), np.random.default_rng(0)
        >>> with rasterio.open(f"{folder}/scene.tif", "w", driver="GTiff", width=128, height=128,
        ...                    count=2, dtype="uint16", crs="EPSG:32633", nodata=0,
        ...                    transform=from_origin(500000, 4100000, 10, 10)) as dst:
        ...     dst.write(rng.integers(1, 4095, (2, 128, 128), dtype=np.uint16))
        >>> _ = compress_scene(f"{folder}/scene.tif", f"{folder}/scene.zarr", tile=64,
        ...                    pretrained=False, model_config={"N": 16, "M": 24}, progress=False)
        >>> arr = open_dataarray(f"{folder}/scene.zarr")
        >>> arr.shape, arr.rio.crs.to_epsg(), arr.rio.nodata
        ((2, 128, 128), 32633, 0)
        >>> corner = arr.isel(x=slice(0, 64), y=slice(0, 64)).compute()   # decodes one tile
        >>> corner.shape, float(corner.x[0])
        ((2, 64, 64), 500005.0)
    """
    from .. import passive_omp_wait

    passive_omp_wait()  # before the first read imports torch
    ts = TileStore.open(store, "r")
    ts.verify()
    if not ts.is_complete and not allow_incomplete:
        raise StoreError(f"{store} is incomplete (its compress run did not finish): rerun it, or "
                         f"pass allow_incomplete=True")
    meta, grid = ts.meta, ts.grid
    spec = store_spec(ts, checkpoint, precision=precision).to_dict()
    count, dtype = int(meta["count"]), np.dtype(meta["dtype"])
    step = grid.tile * chunk_tiles
    rows = [(y, min(step, grid.height - y)) for y in range(0, grid.height, step)]
    cols = [(x, min(step, grid.width - x)) for x in range(0, grid.width, step)]
    blocks = [[da.from_delayed(dask.delayed(_chunk, pure=True)(str(store), (x, y, w, h), spec),
                               shape=(count, h, w), dtype=dtype)
               for x, w in cols] for y, h in rows]
    data = da.block([[b for b in row] for row in blocks]) if blocks else None
    t = grid.transform
    coords: dict = {"band": np.arange(1, count + 1)}
    if t.b == 0 and t.d == 0:
        coords["x"] = t.c + t.a * (np.arange(grid.width) + 0.5)
        coords["y"] = t.f + t.e * (np.arange(grid.height) + 0.5)
    arr = xr.DataArray(data, dims=("band", "y", "x"), coords=coords,
                       name=meta.get("source_name", "pixels"),
                       attrs={"long_name": tuple(meta.get("band_names") or ()),
                              "geocompress_store": str(store)})
    if grid.crs is not None:
        arr = arr.rio.write_crs(grid.crs)
    arr = arr.rio.write_transform(t)
    if meta.get("nodata") is not None:
        arr = arr.rio.write_nodata(meta["nodata"], encoded=False)
    return arr
