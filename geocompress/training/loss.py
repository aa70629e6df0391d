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

    Level balance (variable-rate models): the top level's loss is ~70 times the lowest's (its
    distortion weighs 200 times more), so in the plain batch mean the parameters every level
    shares (the entropy model, the trunk) serve the top levels. With ``balance`` ``p`` > 0 the
    gradient comes from ``objective``, each sample's loss weighted by ``L_l ** -p`` (``L_l`` a
    running mean of its integer level's loss; weights averaging 1 over the levels): ``p = 1``
    weighs every level's *relative* improvement alike. Scaling a sample's whole loss does not move
    its own rate-distortion trade-off, only its share of the shared parameters; ``loss`` (logged)
    stays the plain mean.

    Args:
        lmbda: the lambda of CompressAI's convention (:mod:`.lambdas`).
        balance: the exponent ``p`` of the level balance (0: off).
    """

    def __init__(self, lmbda: float, balance: float = 0.0) -> None:
        super().__init__()
        self.lmbda = float(lmbda)
        self.balance = float(balance)
        self.lambdas: Tensor | None = None
        self.levels: Tensor | None = None
        self.level_loss: dict[int, float] = {}  # running mean of each integer level's loss

    def per_sample(self, lambdas: Tensor | None, levels: Tensor | None = None) -> None:
        """Lambdas (and levels, for the level balance) of the next batch's samples (None: the
        single ``lmbda`` again).

        Args:
            lambdas: one lambda per sample.
            levels: each sample's continuous level (its integer part picks the running mean).
        """
        self.lambdas, self.levels = lambdas, levels

    def _weights(self, levels: Tensor, loss_i: Tensor) -> Tensor:
        bins = levels.detach().floor().long().tolist()
        for b in set(bins):
            v = float(loss_i[[i for i, k in enumerate(bins) if k == b]].mean())
            if math.isfinite(v):
                old = self.level_loss.get(b)
                self.level_loss[b] = v if old is None else 0.99 * old + 0.01 * v
        inv = {b: max(v, 1e-6) ** -self.balance for b, v in self.level_loss.items()}
        norm = sum(inv.values()) / len(inv)
        return torch.tensor([inv.get(b, norm) / norm for b in bins], device=loss_i.device)

    def forward(self, out: dict, target: Tensor) -> dict[str, Tensor]:
        """The loss of one batch.

        Args:
            out: the model's output (``x_hat``, ``likelihoods``).
            target: the batch the model saw (B x C x H x W in [0, 1]).

        Returns:
            ``loss`` (what is logged), ``bpp``, ``mse``, ``psnr``, and ``objective`` (what to
            minimise) when the level balance is on.
        """
        b, _, h, w = target.shape
        if self.lambdas is not None:
            bpp_i = sample_bpp(out["likelihoods"], h * w)
            mse_i = ((out["x_hat"].float() - target.float()) ** 2).flatten(1).mean(1)
            lam = self.lambdas.to(bpp_i.device)
            loss_i = bpp_i + lam * 255 ** 2 * mse_i
            loss = loss_i.mean()
            bpp, mse = bpp_i.mean(), mse_i.mean()
            if self.balance and self.levels is not None:
                objective = (self._weights(self.levels, loss_i.detach()) * loss_i).mean()
                psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
                return {"loss": loss, "bpp": bpp, "mse": mse, "psnr": psnr, "objective": objective}
        else:
            bpp = rate_bpp(out["likelihoods"], b * h * w)
            mse = torch.mean((out["x_hat"].float() - target.float()) ** 2)
            loss = bpp + self.lmbda * 255 ** 2 * mse
        psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
        return {"loss": loss, "bpp": bpp, "mse": mse, "psnr": psnr}
