"""Bytes in and out: the tile string format, the tile codec, the exact entropy path, weights.

The package imports lazily (PEP 562): ``geocompress.codec.format``, ``.decoding``, ``.errors`` and
``.numpy_decoder`` import no torch, so a reader that decodes without it (issue 38) stays light;
the names below that need the model (``TileCodec``, ``load_codec``, the weights' helpers) import
torch and CompressAI on first use.
"""

from geocompress._lazy import lazy_attributes

from .errors import (
    CodecError,
    CorruptStreamError,
    ForeignStreamError,
    TruncatedStreamError,
    UnsupportedVersionError,
    WeightsError,
    WeightsMismatchError,
)
from .choice import CodecChoice
from .format import FORMAT_VERSION, TileHeader

__all__ = [
    "CodecChoice", "CodecError", "CorruptStreamError", "ForeignStreamError", "TruncatedStreamError",
    "UnsupportedVersionError", "WeightsError", "WeightsMismatchError", "FORMAT_VERSION",
    "TileHeader", "TileCodec", "load_codec", "load_checkpoint", "restore_constants", "save_checkpoint",
    "state_digest", "untrained",
]

_LAZY = {"TileCodec": ".tile_codec", "load_codec": ".tile_codec", "load_checkpoint": ".weights",
         "restore_constants": ".weights", "save_checkpoint": ".weights", "state_digest": ".weights",
         "untrained": ".weights"}

__getattr__ = lazy_attributes(__name__, _LAZY)
