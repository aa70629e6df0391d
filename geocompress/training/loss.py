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
    """Estimated bits per pixel from a model's likelihoods (always computed in float32)."""
    return sum(torch.log(p.float()).sum() for p in likelihoods.values()) / (-math.log(2) * pixels)


class RateDistortionLoss(torch.nn.Module):
    """``bpp + lmbda * 255**2 * MSE``; returns the parts too (``bpp``, ``mse`` on [0,1], ``psnr``)."""

    def __init__(self, lmbda: float) -> None:
        super().__init__()
        self.lmbda = float(lmbda)

    def forward(self, out: dict, target: Tensor) -> dict[str, Tensor]:
        b, _, h, w = target.shape
        bpp = rate_bpp(out["likelihoods"], b * h * w)
        mse = torch.mean((out["x_hat"].float() - target.float()) ** 2)
        loss = bpp + self.lmbda * 255 ** 2 * mse
        psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
        return {"loss": loss, "bpp": bpp, "mse": mse, "psnr": psnr}
