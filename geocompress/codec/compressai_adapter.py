"""The one place geocompress reaches into CompressAI's entropy models below their public API.

The codec needs a few things CompressAI computes but keeps private: the entropy bottleneck's
medians (where the hyper latent is rounded), the per-channel CDF indexes of a bottleneck, the
likelihoods of given values (for the encoder's rate in :mod:`geocompress.codec.refine`), the
bottleneck's cumulative logits (to settle its quantiles after training) and the names of the CDF
buffers a checkpoint stores. Every module calls the functions here instead of ``eb._x`` /
``gc._x``, and ``tests/test_compressai_adapter.py`` pins what each returns, so a CompressAI
upgrade that changes one of them fails there first rather than as a silent change of the bits
(tested against CompressAI 1.2.x).
"""

from __future__ import annotations

import torch
from compressai.entropy_models import EntropyModel
from torch import Tensor

# The buffers of an entropy model that hold its CDF tables, as named in a state_dict; their length
# depends on the trained density, so loading another density's tables must resize them first.
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


def cdf_tables(em: torch.nn.Module) -> tuple[Tensor, Tensor, Tensor]:
    """The CDF tables an entropy model codes with, as stored in its checkpoint.

    Args:
        em: an ``EntropyBottleneck`` or ``GaussianConditional`` after ``update()``.

    Returns:
        ``(quantized_cdf, cdf_length, offset)``: one CDF row per channel (bottleneck) or per
        table scale (Gaussian), each row's length, and each row's symbol offset.
    """
    return em.quantized_cdf, em.cdf_length, em.offset


def table_rows(em: torch.nn.Module) -> int:
    """How many CDF rows an entropy model holds: the bottleneck's channels, or the number of
    scales of a Gaussian conditional's table.

    Args:
        em: an entropy model after ``update()``.

    Returns:
        The number of rows of its quantized CDF.
    """
    return int(em.quantized_cdf.size(0))


def bottleneck_medians(eb: torch.nn.Module) -> Tensor:
    """The entropy bottleneck's medians: the value each channel of the hyper latent is rounded
    around (``round(z - median) + median``), as its ``compress`` / ``decompress`` use them.

    Args:
        eb: an ``EntropyBottleneck``.

    Returns:
        A ``C x 1 x 1`` view of its quantiles' middle column (differentiable, not detached).
    """
    return eb._get_medians()


def bottleneck_indexes(size: tuple[int, ...]) -> Tensor:
    """The CDF row of each symbol of a bottleneck-coded tensor: its channel.

    Args:
        size: ``(batch, channels, *spatial)``.

    Returns:
        An int32 tensor of ``size`` holding each element's channel index.
    """
    from compressai.entropy_models import EntropyBottleneck

    return EntropyBottleneck._build_indexes(tuple(size))


def bottleneck_decompress(eb: torch.nn.Module, strings: list[bytes], size: tuple[int, ...],
                          dtype: torch.dtype, medians: Tensor) -> Tensor:
    """``EntropyBottleneck.decompress`` with the caller's dtype and medians (CompressAI's own
    method fixes both to float32 and its own medians); used to dequantize in float64.

    Args:
        eb: the bottleneck the strings were coded with.
        strings: one rANS stream per image (padded, see :func:`geocompress.codec.entropy.padded`).
        size: the spatial size of the coded tensor.
        dtype: the dtype of the returned tensor.
        medians: ``len(strings) x C x *size`` medians added back to the decoded symbols.

    Returns:
        The dequantized tensor, ``len(strings) x C x *size``.
    """
    indexes = bottleneck_indexes((len(strings), table_rows(eb), *size))
    medians = medians.to(indexes.device)
    return EntropyModel.decompress(eb, strings, indexes.to(eb.quantized_cdf.device), dtype, medians)


def bottleneck_likelihood(eb: torch.nn.Module, values: Tensor,
                          stop_gradient: bool = False) -> Tensor:
    """The bottleneck's probability mass of the unit interval around each of ``values``, without
    its likelihood lower bound (the caller applies ``eb.likelihood_lower_bound``).

    Args:
        eb: an ``EntropyBottleneck``.
        values: ``C x 1 x N``, the layout the bottleneck computes in (channel first).
        stop_gradient: detach the density's parameters (gradients reach ``values`` only).

    Returns:
        Likelihoods of ``values``' shape, in (0, 1].
    """
    likelihood, _, _ = eb._likelihood(values, stop_gradient=stop_gradient)
    return likelihood


def gaussian_likelihood(gc: torch.nn.Module, values: Tensor, scales: Tensor,
                        means: Tensor | None = None) -> Tensor:
    """A ``GaussianConditional``'s probability mass of the unit interval around each of
    ``values`` under ``N(means, scales)`` (scales lower-bounded as the coder does), without the
    likelihood lower bound.

    Args:
        gc: a ``GaussianConditional``.
        values: the (rounded or noisy) latent.
        scales: predicted scales, ``values``' shape.
        means: predicted means, or None for zero means.

    Returns:
        Likelihoods of ``values``' shape.
    """
    return gc._likelihood(values, scales, means)


def logits_cumulative(eb: torch.nn.Module, x: Tensor, stop_gradient: bool = True) -> Tensor:
    """The bottleneck's learned cumulative density, as logits: monotone non-decreasing in ``x``
    for each channel (by construction), which is what lets the quantiles be found by bisection.

    Args:
        eb: an ``EntropyBottleneck``.
        x: ``C x 1 x N`` points per channel.
        stop_gradient: detach the density's parameters.

    Returns:
        Logits of ``x``'s shape.
    """
    return eb._logits_cumulative(x, stop_gradient=stop_gradient)


def resize_cdf_buffers(eb: torch.nn.Module, state: dict[str, Tensor], prefix: str) -> None:
    """Resize ``eb``'s CDF buffers to the shapes a state_dict holds for them, so that
    ``load_state_dict`` accepts tables of another length (a refitted density).

    Args:
        eb: the entropy model that will load ``state``.
        state: a state_dict (or part of one).
        prefix: ``eb``'s name in ``state``, with its trailing dot (``"entropy_bottleneck."``).
    """
    for name in CDF_BUFFERS:
        key = prefix + name
        if key in state:
            getattr(eb, name).resize_(state[key].shape)
