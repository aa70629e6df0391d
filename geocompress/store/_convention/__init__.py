"""Georeferencing convention writers/readers for the Zarr store.

One module per convention (like rioxarray's ``_convention``):
:mod:`.cf` (CF grid mapping as GDAL/rioxarray read it) and :mod:`.zarr`
(GeoZarr-direction ``proj:`` / ``spatial:`` Zarr conventions).
"""
