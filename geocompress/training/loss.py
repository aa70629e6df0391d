"""The rate-distortion objective ``R + lambda * D`` of the paper, in CompressAI's convention.

``R`` is the estimated rate in bits per pixel, ``-sum(log2 likelihoods) / (B * H * W)`` over every
latent (``y`` and ``z``); ``D`` is the MSE of pixels on the 0..255 scale, i.e. ``255**2`` times the
MSE of the [0, 1] tensors the models see. With that ``D``, CompressAI's lambdas 0.0018 - 0.0932 give
about 0.1 - 1.2 bpp; the paper's list lives on another scale (see :mod:`.lambdas`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rate_bpp(likelihoods: dict[str, Tensor], pixels: int) -> Tensor:
    """Estimated bits per pixel from a model's likelihoods (in float32: bf16 logs of
    likelihoods near 1 would round the rate away).

    Args:
        likelihoods: the model's likelihoods per latent (``y``, ``z``).
        pixels: pixels of the whole batch (B * H * W).

    Returns:
        A scalar tensor.
    """
    return sum(torch.log(p.float()).sum() for p in likelihoods.values()) / (-math.log(2) * pixels)


def sample_bpp(likelihoods: dict[str, Tensor], pixels: int) -> Tensor:
    """Estimated bits per pixel of each sample (for per-sample lambdas of a variable-rate model).

    Args:
        likelihoods: the model's likelihoods per latent (``y``, ``z``).
        pixels: pixels per sample (H * W).

    Returns:
        A tensor of B rates.
    """
    return sum(torch.log(p.float()).flatten(1).sum(1) for p in likelihoods.values()) / (
        -math.log(2) * pixels)


class RateDistortionLoss(torch.nn.Module):
    """``bpp + lmbda * 255**2 * MSE``; returns the parts too (``bpp``, ``mse`` on [0,1], ``psnr``).

    ``lmbda`` is one float, or (for a variable-rate model) set per sample with :meth:`per_sample`:
    then the loss is the batch mean of each sample's own ``bpp_i + lambda_i * 255**2 * MSE_i``.

    Args:
        lmbda: the lambda of CompressAI's convention (:mod:`.lambdas`).
    """

    def __init__(self, lmbda: float) -> None:
        super().__init__()
        self.lmbda = float(lmbda)
        self.lambdas: Tensor | None = None

    def per_sample(self, lambdas: Tensor | None) -> None:
        """Lambdas of the next batch's samples (None: the single ``lmbda`` again)."""
        self.lambdas = lambdas

    def forward(self, out: dict, target: Tensor) -> dict[str, Tensor]:
        b, _, h, w = target.shape
        if self.lambdas is not None:
            bpp_i = sample_bpp(out["likelihoods"], h * w)
            mse_i = ((out["x_hat"].float() - target.float()) ** 2).flatten(1).mean(1)
            lam = self.lambdas.to(bpp_i.device)
            loss = (bpp_i + lam * 255 ** 2 * mse_i).mean()
            bpp, mse = bpp_i.mean(), mse_i.mean()
        else:
            bpp = rate_bpp(out["likelihoods"], b * h * w)
            mse = torch.mean((out["x_hat"].float() - target.float()) ** 2)
            loss = bpp + self.lmbda * 255 ** 2 * mse
        psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
        return {"loss": loss, "bpp": bpp, "mse": mse, "psnr": psnr}
