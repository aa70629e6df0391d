"""The Dask graphs that join codec, geo and store: compress a scene, decompress a scene or a
region, open a store lazily, describe a store."""

from .compress import CompressResult, compress_scene
from .info import store_info
from .mosaic import decode_region, decompress_scene
from .view import open_dataarray

__all__ = ["CompressResult", "compress_scene", "decode_region", "decompress_scene",
           "open_dataarray", "store_info"]
