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


def passive_omp_wait() -> None:
    """torch's OpenMP threads sleep rather than spin while they wait, unless the user chose
    (``OMP_WAIT_POLICY``): with spinning threads, a 16-tile decode on a 2-core machine busy with
    another job took 16-39 s instead of 1.5 s (issue 38). Read when torch loads: set before it, by
    the CLI's codec commands and by opening a store as a dataset, never by training."""
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

