"""geocompress: learned compression of whole georeferenced satellite scenes.

Data flows one way: grid -> tiles -> codec -> store -> mosaic (see README, "Architecture").
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from . import _compressai

# CompressAI without its point-cloud datasets and transforms (torch_geometric, ~3 s per process):
# before anything imports it (issue 38)
_compressai.install()

if TYPE_CHECKING:  # pragma: no cover
    from .codec import TileCodec


def load_codec(arch: str = "mgssnet", quality: int | None = None, pretrained: bool = True,
               device: str = "cpu", **config: Any) -> "TileCodec":
    """Tile codec for ``arch``: shipped weights at ``quality`` or, with ``pretrained=False``, the
    architecture with fixed-seed weights. Imported lazily so that ``import geocompress`` is cheap."""
    from .codec import load_codec as _load

    return _load(arch=arch, quality=quality, pretrained=pretrained, device=device, **config)
