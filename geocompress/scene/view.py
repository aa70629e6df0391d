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
    """A lazy view of the store; one Dask chunk per ``chunk_tiles`` x ``chunk_tiles`` tiles (one
    tile by default, so a small region read decodes only the tiles it touches). An incomplete
    store is refused unless ``allow_incomplete`` (its missing tiles then read as the fill value:
    the view has no mask, so prefer ``decompress_scene`` for such a store)."""
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
