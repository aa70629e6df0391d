"""CompressAI's rANS coder and what surrounds it, without torch: the extension, symbol schedules,
CDF tables and padded streams, shared by the PyTorch and the NumPy decoder.

CompressAI's ``ans`` extension is plain C++ (pybind11, no libtorch): :func:`ans` loads it from
CompressAI's package folder without running the package (whose import is torch's), so a reader
decodes the same symbols with the same coder either way.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

RASTER, WAVEFRONT = "raster", "wavefront"  # joint models' symbol orders (see schedule)


@functools.lru_cache(maxsize=None)
def ans() -> ModuleType:
    """CompressAI's ``compressai.ans`` (``RansEncoder``, ``RansDecoder``), imported without
    CompressAI's package ``__init__`` or torch when neither is loaded yet.

    Returns:
        The extension module (registered as ``compressai.ans``, where a later CompressAI import
        finds it).

    Raises:
        ImportError: CompressAI is not installed, or has no ``ans`` extension.
    """
    loaded = sys.modules.get("compressai.ans")
    if loaded is not None:
        return loaded
    if "compressai" in sys.modules:  # the package is there: its own import is cheap now
        import compressai.ans

        return compressai.ans
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("CompressAI is not installed (pip install compressai)")
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = Path(folder) / f"ans{suffix}"
            if path.is_file():
                loader = importlib.machinery.ExtensionFileLoader("compressai.ans", str(path))
                module_spec = importlib.util.spec_from_loader("compressai.ans", loader)
                module = importlib.util.module_from_spec(module_spec)
                loader.exec_module(module)
                sys.modules["compressai.ans"] = module
                return module
    raise ImportError(f"CompressAI's rANS extension (ans*.so) is not in {spec.submodule_search_locations}")


def padded(stream: bytes, symbols: int) -> bytes:
    """``stream`` followed by zeros the rANS decoder may read past its end.

    CompressAI's decoder reads 32-bit words without bounds checks: a damaged or forged stream
    (even one with a valid CRC) makes it read past the buffer, up to a word per symbol plus the
    bypass-coded runs the payload's own bits can ask for (at most 15 nibbles per payload nibble).
    Zeros there end every bypass run at once; a valid stream never reads them, so they change
    nothing it decodes.

    Args:
        stream: one rANS stream as stored.
        symbols: how many symbols the decoder will read from it.

    Returns:
        The stream with enough trailing zeros for any over-read.
    """
    return bytes(stream) + bytes(16 * len(stream) + 16 * int(symbols) + 64)


class CdfTable:
    """CDF rows as Python lists (converted once, not per call), as the rANS coder takes them.

    Args:
        cdf: the quantized CDFs, one row per table entry (rows padded to the longest).
        lengths: each row's length.
        offsets: each row's symbol offset.
    """

    def __init__(self, cdf: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> None:
        self.lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
        cdf = np.asarray(cdf)
        self.rows = [cdf[i, :n].tolist() for i, n in enumerate(self.lengths)]
        self.offsets = [int(o) for o in np.asarray(offsets).reshape(-1)]

    def subset(self, indexes: np.ndarray) -> tuple[list[int], list[list[int]], list[int], list[int]]:
        """Remap ``indexes`` onto only the rows they use: the coder's cost of marshalling tables
        is then proportional to what a position needs, not to the whole 64-row table.

        Args:
            indexes: the table row of each symbol.

        Returns:
            ``(indexes into the subset, rows, lengths, offsets)``, the coder's arguments.
        """
        used, where = np.unique(np.asarray(indexes), return_inverse=True)
        used = used.tolist()
        return (where.reshape(-1).tolist(), [self.rows[u] for u in used],
                [self.lengths[u] for u in used], [self.offsets[u] for u in used])


@functools.lru_cache(maxsize=64)
def schedule(h: int, w: int, k: int, order: str) -> tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]:
    """Groups of latent positions ``(rows, cols)`` in coding order; a group's positions depend
    only on earlier groups, so they are coded together.

    ``raster`` (format 1): one position per group, row by row. ``wavefront`` (format 2): a
    ``k x k`` causal mask reaches ``k // 2`` columns to the right on the rows above, so position
    ``(i, j)`` depends only on positions with a smaller ``(k // 2 + 1) * i + j``; the groups are
    those diagonals (61 steps instead of 256 for a 16 x 16 latent at k = 5), rows ascending
    within a group. The symbols and the decoded latent are the same in both orders; only their
    order in the stream differs.

    Args:
        h: latent rows.
        w: latent columns.
        k: the context model's kernel size.
        order: :data:`RASTER` or :data:`WAVEFRONT`.

    Returns:
        The groups in coding order, each ``(rows, cols)`` tuples of equal length.

    Raises:
        ValueError: an unknown order (a header can only name the two).
    """
    if order == RASTER:
        return tuple(((i,), (j,)) for i in range(h) for j in range(w))
    if order != WAVEFRONT:
        raise ValueError(f"unknown coding order {order!r}")
    a = k // 2 + 1
    groups: dict[int, list[tuple[int, int]]] = {}
    for i in range(h):
        for j in range(w):
            groups.setdefault(a * i + j, []).append((i, j))
    return tuple((tuple(i for i, _ in g), tuple(j for _, j in g))
                 for _, g in sorted(groups.items()))
