"""Encoder-side latent refinement: spend encode time on a better latent for the same decoder.

``g_a`` is one network amortised over every image, and on this project's CPU budget an
undertrained one; for a given tile, the latent that minimises the model's own ``R + lambda * D``
under the codec's quantization is usually another one. Searching for it per tile by gradient
descent (Campos et al. 2019, "Content adaptive optimization for neural image compression"; Yang,
Bamler & Mandt 2020, "Improving inference for neural image compression") changes only *which*
latent the encoder codes: the decoder, the string format and bit-exact decoding are untouched,
and a refined string decodes with any geocompress of the same weights.

The objective is the codec's: the hyper latent is ``h_a(y)`` rounded around the bottleneck's
medians, ``y`` is rounded around the means the sequential decoder will predict (a few fixed-point
iterations, :func:`decoder_latent`) with gradients passed straight through, and the distortion
counts only the tile's own pixels (not the codec's edge padding). The latent kept is the one with
the lowest *exact* objective (rate = likelihood of the rounded values); the gradient prices the
rate at ``y + U(-0.5, 0.5)`` instead, as the weights were trained (``mixed`` quantization): the
exact rate's straight-through gradient is zero at the integers, so it lets the rate creep up
(measured in ``catalogs/models/mgssnet-training.md``). The noise is one seeded draw per step shared by all tiles, so each tile's objective
depends on its own latent only and a tile refines to the same latent alone or in a batch. Costs
one forward and backward pass of the whole model per step: worth it on a GPU, seconds per tile on
a small CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import compressai_adapter as cai
from .entropy import structure

FIXED_POINT_ITERS = 3


def ste(x: Tensor, x_hat: Tensor) -> Tensor:
    """``x_hat`` forward, identity gradient to ``x``.

    Args:
        x: the value gradients flow to.
        x_hat: the value used forward (e.g. ``x`` rounded).

    Returns:
        A tensor equal to ``x_hat`` whose gradient is the identity to ``x``.
    """
    return x + (x_hat - x).detach()


def median_rounded(eb: torch.nn.Module, v: Tensor) -> Tensor:
    """``v`` rounded around the entropy bottleneck's medians (as the codec codes it), with a
    straight-through gradient.

    Args:
        eb: the entropy bottleneck (its medians through
            :func:`geocompress.codec.compressai_adapter.bottleneck_medians`).
        v: ``B x C x H x W``.

    Returns:
        ``round(v - median) + median`` with the identity gradient to ``v``.
    """
    med = cai.bottleneck_medians(eb).reshape(1, -1, 1, 1)
    return ste(v, torch.round(v - med) + med)


@torch.no_grad()
def decoder_latent(model: torch.nn.Module, y: Tensor, params: Tensor,
                   iters: int = FIXED_POINT_ITERS) -> Tensor:
    """Approximately the ``y_hat`` the joint model's sequential decoder rebuilds from ``y``
    (``y_hat <- round(y - mu(y_hat)) + mu(y_hat)`` iterated in parallel); in float32 also under
    autocast (bf16 cannot hold ``round(y - mu) + mu`` for larger latents).

    Args:
        model: a joint (context-model) model.
        y: the encoder's latent.
        params: the hyper decoder's output for this latent.
        iters: fixed-point iterations.

    Returns:
        The approximate decoded latent, detached, in ``y``'s dtype promoted to at least float32.
    """
    dtype = torch.promote_types(y.dtype, torch.float32)  # bf16/fp16 -> fp32; fp64 stays
    y = y.detach().to(dtype)
    params = params.detach().to(dtype)
    y_hat = torch.round(y)
    with torch.autocast(device_type=y.device.type, enabled=False):
        for _ in range(iters):
            ctx = model.context_prediction(y_hat)
            means = model.entropy_parameters(torch.cat((params, ctx), dim=1)).chunk(2, 1)[1]
            y_hat = torch.round(y - means) + means
    return y_hat


def _bottleneck_bits(eb: torch.nn.Module, v_hat: Tensor) -> Tensor:
    """Bits of each sample of already-rounded ``v_hat`` (B x C x H x W) under the factorized
    bottleneck, differentiable in ``v_hat``."""
    c = v_hat.shape[1]
    values = v_hat.transpose(0, 1).reshape(c, 1, -1)  # the layout EntropyBottleneck works in
    lik = cai.bottleneck_likelihood(eb, values)
    if eb.use_likelihood_bound:
        lik = eb.likelihood_lower_bound(lik)
    bits = -torch.log2(lik).reshape(c, v_hat.shape[0], -1)
    return bits.sum(dim=(0, 2))


def _gaussian_bits(gc: torch.nn.Module, y_hat: Tensor, scales: Tensor, means: Tensor | None) -> Tensor:
    lik = cai.gaussian_likelihood(gc, y_hat, scales, means)
    if gc.use_likelihood_bound:
        lik = gc.likelihood_lower_bound(lik)
    return -torch.log2(lik).flatten(1).sum(1)


def codec_objective(model: torch.nn.Module, y: Tensor, x: Tensor, mask: Tensor | None = None,
                    noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(bits, squared error, relaxed bits) per tile of coding latent ``y`` for image batch ``x``,
    as the codec would code it; ``mask`` (B x 1 x H x W, 1 = the tile's own pixels) leaves padding
    out. The relaxed bits price ``y + noise`` instead of the rounded ``y`` (training's rate term;
    without ``noise`` they are the bits).

    Args:
        model: the codec's model (any structure of :func:`geocompress.codec.entropy.structure`).
        y: the latent being coded, ``B x M x h x w``.
        x: the image batch in [0, 1], ``B x 3 x H x W``.
        mask: ``B x 1 x H x W``, 1 on the tile's own pixels; None counts every pixel.
        noise: uniform noise for the relaxed rate, or None.

    Returns:
        Per tile: bits, summed squared error over the masked pixels, and relaxed bits.
    """
    kind = structure(model)
    eb = model.entropy_bottleneck
    if kind == "factorized":
        y_hat = median_rounded(eb, y)
        bits = _bottleneck_bits(eb, y_hat)
        relaxed = bits if noise is None else _bottleneck_bits(eb, y + noise)
    else:
        z_hat = median_rounded(eb, model.h_a(torch.abs(y) if kind == "scale" else y))
        z_bits = _bottleneck_bits(eb, z_hat)
        params = model.h_s(z_hat)
        gc = model.gaussian_conditional
        if kind == "scale":
            y_hat = ste(y, torch.round(y))
            scales, means = params, None
        elif kind == "mean-scale":
            scales, means = params.chunk(2, 1)
            y_hat = ste(y, torch.round(y - means) + means)
        else:  # joint: the means depend on the decoded neighbours
            y_hat = ste(y, decoder_latent(model, y, params))
            ctx = model.context_prediction(y_hat)
            scales, means = model.entropy_parameters(torch.cat((params, ctx), dim=1)).chunk(2, 1)
        bits = z_bits + _gaussian_bits(gc, y_hat, scales, means)
        relaxed = bits if noise is None else z_bits + _gaussian_bits(gc, y + noise, scales, means)
    err = (model.g_s(y_hat) - x) ** 2
    if mask is not None:
        err = err * mask
    return bits, err.flatten(1).sum(1), relaxed


def refine_latents(model: torch.nn.Module, x: Tensor, y: Tensor, lmbda: float, steps: int,
                   lr: float = 5e-3, mask: Tensor | None = None) -> Tensor:
    """``y`` moved by ``steps`` Adam steps on ``bpp + lmbda * 255**2 * MSE`` of each tile's own
    pixels (``mask``; the training loss of the weights, so ``lmbda`` is theirs; the rate's
    gradient from the noisy relaxation, module docstring). Returns, per tile, the latent with the
    lowest exact objective seen (the start included), detached.

    Args:
        model: the codec's model (left in its training mode and gradient flags afterwards).
        x: the image batch in [0, 1].
        y: the analysis transform's latent for ``x``.
        lmbda: the weights' rate-distortion trade-off.
        steps: Adam steps; 0 or less returns ``y`` unchanged.
        lr: Adam's learning rate.
        mask: ``B x 1 x H x W``, 1 on the tile's own pixels; None counts every pixel.

    Returns:
        The refined latents, detached, ``y``'s shape.
    """
    if steps <= 0:
        return y
    if mask is None:
        mask = torch.ones((x.shape[0], 1, *x.shape[-2:]), dtype=x.dtype, device=x.device)
    pixels = mask.flatten(1).sum(1).clamp_min(1)
    was = model.training
    model.eval()
    grads = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            var = y.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([var], lr=lr)
            best = y.detach().clone()
            best_loss = torch.full((y.shape[0],), float("inf"), dtype=y.dtype, device=y.device)
            gen = torch.Generator(device=y.device)
            for step in range(steps + 1):
                gen.manual_seed(step)  # the same draw for every tile: independent of the batch
                noise = (torch.rand(y.shape[1:], generator=gen, device=y.device, dtype=y.dtype)
                         - 0.5).expand_as(y)
                bits, sse, relaxed = codec_objective(model, var, x, mask, noise)
                dist = lmbda * 255 ** 2 * sse / (pixels * x.shape[1])
                loss = bits / pixels + dist
                with torch.no_grad():
                    better = loss < best_loss
                    best[better] = var.detach()[better]
                    best_loss = torch.where(better, loss.detach(), best_loss)
                if step == steps:
                    break
                opt.zero_grad(set_to_none=True)
                (relaxed / pixels + dist).sum().backward()
                opt.step()
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        model.train(was)
    return best
