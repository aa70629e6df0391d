"""geocompress: learned compression of whole georeferenced satellite scenes.

Data flows one way: grid -> tiles -> codec -> store -> mosaic (see README, "Architecture").
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from . import _compressai
from .shipped import DEFAULT_ARCH

# CompressAI without its point-cloud datasets and transforms (torch_geometric, ~3 s per process):
# before anything imports it (issue 38)
_compressai.install()

if TYPE_CHECKING:  # pragma: no cover
    from .codec import CodecChoice, TileCodec


def load_codec(choice: "CodecChoice | str" = DEFAULT_ARCH, quality: float | None = None,
               **options: Any) -> "TileCodec":
    """The tile codec: :func:`geocompress.codec.load_codec` (its arguments, examples and errors),
    imported when first called so that ``import geocompress`` stays cheap.

    Args:
        choice: a :class:`geocompress.codec.CodecChoice`, or an architecture name.
        quality: a shipped quality, or a variable-rate model's level.
        **options: ``CodecChoice`` fields and, for ``pretrained=False``, architecture
            configuration.

    Returns:
        The codec.
    """
    from .codec import load_codec as _load

    return _load(choice, quality, **options)


def passive_omp_wait() -> None:
    """torch's OpenMP threads sleep rather than spin while they wait, unless the user chose
    (``OMP_WAIT_POLICY``): spinning threads slow a decode on a small machine busy with another
    job many times over (issue 38; figures in ``catalogs/figures-from-docstrings.md``). Read when
    torch loads: set before it, by the CLI's codec commands and by opening a store as a dataset,
    never by training (whose threads are busy anyway). Does nothing once torch is imported.
    """
    import os
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

