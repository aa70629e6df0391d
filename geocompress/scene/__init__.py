"""The Dask graphs that join codec, geo and store: compress a scene, decompress a scene or a
region, open a store lazily, describe a store.

Submodules load on first use (PEP 562): ``geocompress.scene.output`` (what the CLI's parser
lists) costs no torch or Dask import."""

from geocompress._lazy import lazy_attributes

__all__ = ["ClusterChoice", "CompressResult", "OutputSpec", "Region", "TilingChoice", "compress_scene",
           "decode_region", "decompress_scene", "open_dataarray", "store_info"]

_LAZY = {"CompressResult": ".compress", "compress_scene": ".compress", "store_info": ".info",
         "decode_region": ".mosaic", "decompress_scene": ".mosaic", "open_dataarray": ".view",
         "OutputSpec": ".output", "Region": ".mosaic", "TilingChoice": ".compress",
         "ClusterChoice": ".cluster"}

__getattr__ = lazy_attributes(__name__, _LAZY)
