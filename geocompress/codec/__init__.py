"""Bytes in and out: the tile string format, the tile codec, the exact entropy path, weights."""

from geocompress._lazy import gc_paused

with gc_paused():  # torch and CompressAI's models first, without collections that free nothing
    import compressai.models  # noqa: F401 - (through geocompress's light CompressAI package)

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
from .tile_codec import TileCodec, load_codec
from .weights import load_checkpoint, restore_constants, save_checkpoint, state_digest, untrained

__all__ = [
    "CodecChoice", "CodecError", "CorruptStreamError", "ForeignStreamError", "TruncatedStreamError",
    "UnsupportedVersionError", "WeightsError", "WeightsMismatchError", "FORMAT_VERSION",
    "TileHeader", "TileCodec", "load_codec", "load_checkpoint", "restore_constants", "save_checkpoint",
    "state_digest", "untrained",
]
