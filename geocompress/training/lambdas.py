"""Lambda tables: CompressAI's, the paper's, and the conversion between them.

Both are lambdas of ``R + lambda * D`` with ``R`` in bits per pixel. CompressAI's ``D`` is the MSE
on the 0..255 scale (``255**2 * MSE`` of [0, 1] tensors; :class:`.loss.RateDistortionLoss`).
The paper (Shi et al. 2024, III-C) states neither scale; ``catalogs/lambda.md`` works out from the
rate-distortion slope that its list lands on 0.1 - 1.2 bpp when ``lambda_compressai =
lambda_paper / PAPER_SCALE`` with ``PAPER_SCALE = 8`` (its batch size: the reading in which the
rate term is summed over the batch of 8 but divided by one image's pixels).
"""

from __future__ import annotations

# CompressAI's zoo (mse metric), qualities 1..8: about 0.1 .. 1.5 bpp on Kodak.
COMPRESSAI: dict[int, float] = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250,
                                6: 0.0483, 7: 0.0932, 8: 0.1800}

# Shi et al. 2024, section III-C, in the paper's order (high to low quality).
PAPER: list[float] = [0.660, 0.508, 0.211, 0.072, 0.033, 0.013, 0.007]

# See catalogs/lambda.md for the derivation of this factor.
PAPER_SCALE: float = 8.0


def paper_to_compressai(lmbda: float, scale: float = PAPER_SCALE) -> float:
    """A paper lambda as the lambda of ``bpp + lambda * 255**2 * MSE``.

    Args:
        lmbda: a lambda of the paper's list.
        scale: the factor between the scales (``catalogs/lambda.md``).

    Returns:
        The CompressAI-convention lambda.
    """
    return float(lmbda) / scale


def compressai_to_paper(lmbda: float, scale: float = PAPER_SCALE) -> float:
    """A CompressAI-convention lambda on the paper's scale (for catalogs that quote both).

    Args:
        lmbda: the lambda of ``bpp + lambda * 255**2 * MSE``.
        scale: the factor between the scales (``catalogs/lambda.md``).

    Returns:
        The paper-scale lambda.
    """
    return float(lmbda) * scale


def resolve(lmbda: float, scale: str = "compressai") -> float:
    """The CompressAI-convention lambda for ``lmbda`` given on ``scale``.

    Args:
        lmbda: the lambda as given.
        scale: ``"compressai"`` or ``"paper"``.

    Returns:
        The lambda the trainer's loss uses.

    Raises:
        ValueError: an unknown scale.
    """
    if scale == "compressai":
        return float(lmbda)
    if scale == "paper":
        return paper_to_compressai(lmbda)
    raise ValueError(f"lambda scale must be 'compressai' or 'paper', got {scale!r}")
