"""Training forward passes: CompressAI's additive noise, or "mixed" quantization that shows the
synthesis transform and the context model what the codec's decoder will actually give them.

CompressAI's ``forward`` trains on ``y + U(-0.5, 0.5)`` and validates on ``round(y)``, with the
context model reading that same tensor. The codec codes ``round(y - mu) + mu`` instead, with ``mu``
predicted from the *decoded* neighbours (:mod:`geocompress.codec.entropy`), so at low rates --
where most symbols are 0 and ``y_hat`` is mostly the model's own prediction -- the decoder sees
latents the model never trained on: the real codec's PSNR falls below ``forward``'s and its rate
above the estimate.

``mixed`` (Minnen & Singh 2020, "Channel-wise autoregressive entropy models", section 3.1:
noise for the rate term, rounded values with a straight-through gradient for the decoder)
extended to the context model: the decoder's ``y_hat`` is approximated by a few parallel
fixed-point iterations of ``y_hat <- round(y - mu(y_hat)) + mu(y_hat)`` (no gradient; the
sequential decoder's exact solution would cost one network call per latent position), and
``g_s``, the context model and the rate's Gaussian parameters all read it. The hyper latent
is rounded around the entropy bottleneck's medians, as the codec codes it. In eval mode the
rate is the likelihood of exactly those rounded values, which for noise-trained weights predicts
the real coded size. Weights trained this way fit the three-iteration approximation somewhat, and
at high rates the approximation is looser; the real codec still gained.

Measured figures (estimate against real codec, symbols that differ from the sequential decoder's,
the A/B that switched every quality to ``mixed``): ``catalogs/models/mgssnet-training.md``,
"Finding: the real decoder sees latents that training never showed the model".
"""

from __future__ import annotations

import torch
from torch import Tensor

from geocompress.codec.entropy import structure
from geocompress.codec.refine import FIXED_POINT_ITERS, decoder_latent, median_rounded, ste

MODES = ("noise", "mixed")
__all__ = ["MODES", "FIXED_POINT_ITERS", "decoder_latent", "forward"]


def _bottleneck(eb: torch.nn.Module, v: Tensor) -> tuple[Tensor, Tensor]:
    _, likelihoods = eb(v)  # noise in training, median-centred rounding in eval
    return median_rounded(eb, v), likelihoods


def forward(model: torch.nn.Module, x: Tensor, mode: str = "noise") -> dict:
    """The model's forward pass under a training quantization (see the module docstring).

    Args:
        model: a CompressAI-style model (factorized, scale, mean-scale or joint).
        x: a batch in [0, 1].
        mode: ``"noise"`` (CompressAI's own ``forward``) or ``"mixed"``.

    Returns:
        ``{"x_hat", "likelihoods"}``, as CompressAI's ``forward``.

    Raises:
        ValueError: an unknown ``mode``.
    """
    if mode == "noise":
        return model(x)
    if mode != "mixed":
        raise ValueError(f"unknown quantization {mode!r}; choose one of {MODES}")
    kind = structure(model)
    y = model.g_a(x)
    if kind == "factorized":
        y_hat, y_lik = _bottleneck(model.entropy_bottleneck, y)
        return {"x_hat": model.g_s(y_hat), "likelihoods": {"y": y_lik}}
    z = model.h_a(torch.abs(y) if kind == "scale" else y)
    z_hat, z_lik = _bottleneck(model.entropy_bottleneck, z)
    params = model.h_s(z_hat)
    gc = model.gaussian_conditional
    if kind == "scale":
        y_hat = ste(y, torch.round(y))
        _, y_lik = gc(y, params)
    elif kind == "mean-scale":
        scales, means = params.chunk(2, 1)
        y_hat = ste(y, torch.round(y - means) + means)
        _, y_lik = gc(y, scales, means=means)
    else:  # joint
        y_hat = ste(y, decoder_latent(model, y, params))
        ctx = model.context_prediction(y_hat)
        scales, means = model.entropy_parameters(torch.cat((params, ctx), dim=1)).chunk(2, 1)
        _, y_lik = gc(y, scales, means=means)
    return {"x_hat": model.g_s(y_hat), "likelihoods": {"y": y_lik, "z": z_lik}}
