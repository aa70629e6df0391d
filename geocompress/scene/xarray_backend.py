"""``xr.open_dataset(store, engine="geocompress")``: a store opened like any raster.

The dataset has one variable, ``band_data`` (band, y, x), named as rioxarray's
``engine="rasterio"`` names it, lazily decoded tile by tile (:func:`.view.open_dataarray`), with
the CRS, transform and nodata rioxarray reads. Unlike ``engine="rasterio"``
(``mask_and_scale=True`` by default) it is not masked by value: the pixels are the store's
integers, the nodata value in ``_FillValue``, because validity comes from the store's masks,
never from a decoded value (``decompress`` writes them as the GeoTIFF's mask). Registered as an
xarray backend entry point in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import xarray as xr
from xarray.backends import BackendEntrypoint


class GeocompressBackendEntrypoint(BackendEntrypoint):
    """xarray's backend for geocompress stores (``engine="geocompress"``)."""
    description = "geocompress stores: learned-codec tiles in Zarr, decoded on read"
    url = "https://github.com/geocompress/geocompress"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "checkpoint", "precision",
                               "chunk_tiles", "mask_and_scale", "decode_times", "decode_timedelta",
                               "use_cftime", "concat_characters", "decode_coords")

    def open_dataset(self, filename_or_obj: Any, *, drop_variables: Iterable[str] | None = None,
                     checkpoint: str | None = None, precision: str = "auto",
                     chunk_tiles: int = 1, mask_and_scale: bool = False,
                     **decoders: Any) -> xr.Dataset:
        """The store as a dataset of one lazily decoded variable, ``band_data``.

        Args:
            filename_or_obj: the store's folder.
            drop_variables: variables to leave out (``band_data`` is the only one).
            checkpoint: the weights the store was written with, if not shipped.
            precision: the transforms' mode while decoding (any mode decodes any store).
            chunk_tiles: tiles per Dask chunk side.
            mask_and_scale: must stay False (see the module's docstring).
            **decoders: xarray's other CF decoders (``decode_times`` ...): the dataset has no
                variable they act on.

        Returns:
            The dataset, georeferenced as rioxarray reads it.

        Raises:
            StoreError: not a store, or an incomplete one.
            ValueError: ``mask_and_scale=True``.
        """
        from .view import open_dataarray

        if mask_and_scale:
            raise ValueError("engine='geocompress' does not mask by value (validity comes from "
                             "the store's masks): open without mask_and_scale, or write a masked "
                             "GeoTIFF with geocompress decompress")

        arr = open_dataarray(os.fspath(filename_or_obj), chunk_tiles=chunk_tiles,
                             checkpoint=checkpoint, precision=precision)
        ds = arr.rename(None).to_dataset(name="band_data")
        return ds.drop_vars(list(drop_variables or []), errors="ignore")

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """Whether the path is a geocompress store (its root ``zarr.json`` says so).

        Args:
            filename_or_obj: a path, or anything xarray was given.

        Returns:
            True for a geocompress store.
        """
        try:
            meta = json.loads((Path(os.fspath(filename_or_obj)) / "zarr.json").read_text())
        except (OSError, TypeError, ValueError):
            return False
        return "geocompress" in meta.get("attributes", {})
