"""The fixed-point grid of the exact entropy path, shared by its PyTorch and NumPy evaluations.

Weights and biases sit on multiples of ``2**-WEIGHT_BITS``, activations on multiples of
``2**-ACT_BITS``; products are then multiples of ``2**-(WEIGHT_BITS + ACT_BITS)`` and float64 sums
of them are exact while every partial sum stays below ``2**53`` of those units (:data:`LIMIT` in
value units), whatever the summation order. :mod:`.exact` (PyTorch) and :mod:`.numpy_decoder`
(NumPy) both evaluate the networks that choose the entropy coder's distributions on this grid,
so they compute the same bits. This module imports no torch.
"""

from __future__ import annotations

import numpy as np

WEIGHT_BITS = 16
ACT_BITS = 10
LIMIT = 2.0 ** (53 - WEIGHT_BITS - ACT_BITS)  # largest exact |partial sum| in value units


def to_grid(x: np.ndarray, bits: int = ACT_BITS) -> np.ndarray:
    """Round to the nearest multiple of ``2**-bits`` (ties to even, as ``torch.round``).

    Args:
        x: any array.
        bits: fractional bits of the grid.

    Returns:
        ``x`` on the grid, float64.
    """
    s = float(2 ** bits)
    return np.round(np.asarray(x, dtype=np.float64) * s) / s


def next_bound(bound_in: float, row_sum: float, bias_max: float, kind: str) -> float:
    """The largest |output| of a convolution whose inputs are bounded by ``bound_in``: every
    partial sum of its outputs is bounded by it, in any order.

    Args:
        bound_in: the largest |input|.
        row_sum: the largest sum of |weights| over one output's taps.
        bias_max: the largest |bias|.
        kind: the layer's name, for the error.

    Returns:
        The bound of its outputs after rounding to the grid.

    Raises:
        OverflowError: a partial sum could leave float64's exact range: the sums would no longer
            be the same on every machine, so the latent is refused rather than coded with them.
    """
    out = bound_in * row_sum + bias_max
    if out >= LIMIT:
        raise OverflowError(
            f"exact entropy-parameter path out of range in {kind} (bound {out:.3g} "
            f">= {LIMIT:.3g}); the latent is too large for bit-exact decoding")
    return out + 2.0 ** -ACT_BITS
