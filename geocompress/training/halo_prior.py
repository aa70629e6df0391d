"""Fit a model's entropy half to latents computed with a halo, transforms frozen (issue 26).

Trained on isolated crops, the hyperprior and the context model learn that a latent at a tile's
edge is an *edge* latent (the analysis transform saw zero padding there). A tile encoded with a
halo has interior latents at its edges, continuous with its neighbours', and the prior mispredicts
them: the first latent row costs several times the others, and the rounding around mispredicted
means costs PSNR too (``benchmarks/latent_locality.py``; figures in ``catalogs/seams.md``).

The analysis transform is local (a tile's latent with two latent pixels of context is within a
fraction of a percent of the scene's), so interior latents of any tile are windows of a larger
latent map. This module computes such maps once per training tile with the frozen ``g_a`` and
fits ``h_a``, ``h_s``, the context model, the entropy parameters and the factorized prior to the
rate of windows cut out of them (anywhere: interior and edge latents both occur in a scene) (R only: the transforms, hence the distortion at equal means,
do not change). No ``g_s`` and no backward through ``g_a``: a step costs milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from geocompress.codec.refine import decoder_latent, median_rounded

# the tensors this fit changes; everything else of a checkpoint stays bit for bit
PRIOR_PARTS = ("h_a.", "h_s.", "context_prediction.", "entropy_parameters.", "entropy_bottleneck.")


@dataclass(frozen=True)
class HaloPriorConfig:
    """How a halo prior is fitted: steps, batch and window sides (latent pixels), the windows'
    distance from the maps' edges, the main and auxiliary learning rates, the seed and how often
    to validate. The defaults are the shipped priors' recipe.
    """
    steps: int = 2000
    batch: int = 16
    sizes: tuple[int, ...] = (8, 12)  # window sides in latent pixels (tiles of 128 and 192 px)
    # windows anywhere in the maps, at their edges too: a tile at a scene's edge (or next to a
    # dropped tile) has edge latents on that side, and the prior must code both kinds
    margin: int = 0
    lr: float = 1e-4
    aux_lr: float = 1e-3
    seed: int = 0
    val_every: int = 250
    # the tensors refitted (a subset of PRIOR_PARTS keeps the prior file small: a variable-rate
    # model's h_s and context model are most of its size)
    parts: tuple[str, ...] = PRIOR_PARTS
    # a variable-rate model's levels validated (each window size at each; None: 0, the top and
    # two between, 0 / 3 / 7 / 11 on a 12-level scale); training draws levels anywhere on the
    # continuous scale
    val_levels: tuple[float, ...] | None = None


def interior_latents(model: torch.nn.Module, tiles: np.ndarray, batch: int = 8,
                     flips: bool = True) -> torch.Tensor:
    """``g_a`` of each ``3 x T x T`` uint8 tile (and of its transpose, with ``flips``), float32;
    a variable-rate model's without its gain (:func:`gained` applies one per window), so that
    one map serves every level.

    Args:
        model: the base model (its ``g_a``).
        tiles: ``N x 3 x T x T`` uint8 tiles.
        batch: tiles per forward pass.
        flips: add each tile's transpose (twice the data, same statistics).

    Returns:
        ``N (x 2) x M x T/16 x T/16`` latents.
    """
    out = []
    g_a = getattr(model.g_a, "ungained", model.g_a)
    with torch.no_grad():
        for i in range(0, len(tiles), batch):
            x = torch.from_numpy(np.asarray(tiles[i:i + batch], dtype=np.float32) / 255.0)
            out.append(g_a(x))
            if flips:
                out.append(g_a(x.transpose(-1, -2).flip(-1).contiguous()))
    return torch.cat(out)


def windows(latents: torch.Tensor, size: int, n: int, rng: np.random.Generator,
            margin: int = 0) -> torch.Tensor:
    """``n`` random ``size x size`` windows at least ``margin`` latent pixels from the maps'
    edges (a window side at 0 is an edge latent, one at 2 or more an interior latent: the
    analysis transform is local beyond 2).

    Args:
        latents: ``N x M x h x w`` maps.
        size: window side.
        n: how many.
        rng: the random generator.
        margin: minimum distance from the maps' edges.

    Returns:
        ``n x M x size x size``.

    Raises:
        ValueError: the maps are too small for such a window.
    """
    hi = latents.shape[-1] - margin - size
    if hi < margin:
        raise ValueError(f"latent maps of {latents.shape[-1]} have no {size} x {size} window "
                         f"{margin} from their edges")
    idx = rng.integers(0, len(latents), n)
    r = rng.integers(margin, hi + 1, n)
    c = rng.integers(margin, hi + 1, n)
    return torch.stack([latents[i, :, a:a + size, b:b + size] for i, a, b in zip(idx, r, c)])


def variable_rate(model: torch.nn.Module) -> bool:
    """Whether ``model`` codes at a level of its own (gain units: a latent per level).

    Args:
        model: any model of the registry.

    Returns:
        True for a variable-rate model (its prior is fitted at every level).
    """
    return hasattr(model, "gain_vectors")


def gained(model: torch.nn.Module, y: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Ungained latent windows ``y`` as a variable-rate model's analysis hands them to the prior
    at ``levels`` (one per window); the gains are the model's, not fitted here.

    Args:
        model: a variable-rate model.
        y: ``B x M x h x w`` windows of :func:`interior_latents`.
        levels: ``B`` levels on the model's continuous scale.

    Returns:
        The gained windows.
    """
    with torch.no_grad():
        return y * model.gain_vectors(levels.to(torch.float64)).to(y.dtype)


def rate_bpp(model: torch.nn.Module, y: torch.Tensor, per_window: bool = False) -> torch.Tensor:
    """Bits per pixel of windows ``y`` coded as tiles: hyper-latent plus latent under the joint
    prior, with what the codec's decoder gives the context model (``mixed`` quantization of
    :mod:`.quantization`, as the shipped weights were trained: a prior fitted on noisy context
    codes above its own estimate, ``catalogs/figures-from-docstrings.md``). Noise for the rate in
    training mode; in eval mode the likelihood of the rounded values, i.e. the coded size.

    Args:
        model: the model being fitted.
        y: latent windows.
        per_window: each window's bits per pixel instead of the mean.

    Returns:
        Mean bits per pixel, a scalar tensor (``B`` of them with ``per_window``).
    """
    z = model.h_a(y)
    _, z_lik = model.entropy_bottleneck(z)
    params = model.h_s(median_rounded(model.entropy_bottleneck, z))
    y_hat = decoder_latent(model, y, params)
    ctx = model.context_prediction(y_hat)
    scales, means = model.entropy_parameters(torch.cat((params, ctx), 1)).chunk(2, 1)
    _, y_lik = model.gaussian_conditional(y, scales, means=means)
    pixels = (16 * y.shape[-2]) * (16 * y.shape[-1])
    bits = -torch.log2(y_lik).flatten(1).sum(1) - torch.log2(z_lik).flatten(1).sum(1)
    return bits / pixels if per_window else bits.sum() / (pixels * y.shape[0])


def prior_parameters(model: torch.nn.Module, parts: tuple[str, ...] = PRIOR_PARTS) -> tuple[list, list]:
    """(main, aux) parameters of the fit; the transforms get no gradient.

    Args:
        model: the model (its parameters outside ``parts`` are frozen here).
        parts: the state-dict prefixes refitted (within :data:`PRIOR_PARTS`).

    Returns:
        ``(main, aux)`` parameter lists.

    Raises:
        ValueError: ``parts`` names tensors outside the prior.
    """
    if not parts or not set(parts) <= set(PRIOR_PARTS):
        raise ValueError(f"a halo prior refits some of {PRIOR_PARTS}, got {parts}")
    main, aux = [], []
    for name, p in model.named_parameters():
        if not name.startswith(parts):
            p.requires_grad_(False)
        elif name.endswith("quantiles"):
            aux.append(p)
        else:
            main.append(p)
    return main, aux


def _val_levels(model: torch.nn.Module, cfg: HaloPriorConfig) -> list[float]:
    """The levels a variable-rate prior is validated at (``cfg.val_levels``, checked)."""
    top = model.levels - 1
    asked = cfg.val_levels if cfg.val_levels is not None else sorted(
        {0, round(top * 3 / 11), round(top * 7 / 11), top})
    return [float(model.check_level(v)) for v in asked]


def _balanced_rate(model: torch.nn.Module, y: torch.Tensor, rng: np.random.Generator,
                   ref_x: np.ndarray, ref_y: np.ndarray) -> torch.Tensor:
    """Windows ``y`` at levels stratified over the whole scale, each window's bits over the base
    prior's rate at its level (``exp(ref_y)`` at ``ref_x``, log-linear between)."""
    lv = (np.arange(len(y)) + rng.random(len(y))) / len(y) * (model.levels - 1)
    weight = torch.from_numpy(np.exp(-np.interp(lv, ref_x, ref_y))).float()
    return (rate_bpp(model, gained(model, y, torch.from_numpy(lv)), per_window=True) * weight).mean()


def fit_halo_prior(model: torch.nn.Module, train: torch.Tensor, val: torch.Tensor,
                   cfg: HaloPriorConfig = HaloPriorConfig(),
                   log: Callable[[str], None] = print) -> list[dict]:
    """Fit the prior of ``model`` in place to windows of ``train`` maps; returns the validation
    history (bpp of fixed ``val`` windows, eval mode, every ``cfg.val_every`` steps).

    A variable-rate model's prior codes every level: each training window gets a level drawn
    anywhere on the continuous scale (stratified over the batch), and its bits weigh by the
    inverse of the base prior's rate at that level (measured on the validation windows before
    the fit, log-linear between them), so that a level at 0.05 bpp counts as much as one at
    0.7 (a plain mean would fit the top levels only). It is validated at ``cfg.val_levels``.

    Args:
        model: the base model; its prior parts (``cfg.parts``) change in place.
        train: training latent maps (a variable-rate model's ungained: :func:`interior_latents`).
        val: validation latent maps.
        cfg: the recipe.
        log: where progress lines go.

    Returns:
        One dict per validation: step and bpp per window size (and level: ``val_bpp_8_L3``).

    Raises:
        FloatingPointError: the rate diverged (a non-finite loss).
        ValueError: ``cfg.parts`` outside the prior, or validation levels outside the model's.
    """
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    vrng = np.random.default_rng(cfg.seed + 1)
    vr = variable_rate(model)
    levels = _val_levels(model, cfg) if vr else [None]
    main, aux = prior_parameters(model, cfg.parts)
    fixed = {s: windows(val, s, 64, vrng, cfg.margin) for s in cfg.sizes}
    opt = torch.optim.Adam(main, lr=cfg.lr)
    aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr) if aux else None
    history: list[dict] = []

    def at(y: torch.Tensor, level: float | None) -> torch.Tensor:
        return y if level is None else gained(model, y, torch.full((len(y),), level))

    def validate(step: int) -> dict:
        model.eval()
        with torch.no_grad():
            row = {"step": step, **{f"val_bpp_{s}" + (f"_L{lv:g}" if vr else ""):
                                    float(rate_bpp(model, at(w, lv)))
                                    for s, w in fixed.items() for lv in levels}}
        history.append(row)
        log(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step"))
        model.train()
        return row

    first = validate(0)
    # a variable-rate model's windows weigh by the base prior's rate at their level
    ref_x = np.array(levels if vr else [], dtype=float)
    ref_y = np.log([np.mean([first[f"val_bpp_{s}_L{lv:g}"] for s in cfg.sizes]) for lv in levels]
                   if vr else [])
    model.train()
    for step in range(1, cfg.steps + 1):
        y = windows(train, cfg.sizes[step % len(cfg.sizes)], cfg.batch, rng, cfg.margin)
        loss = _balanced_rate(model, y, rng, ref_x, ref_y) if vr else rate_bpp(model, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main, 1.0)
        opt.step()
        if aux_opt is not None:
            aux_loss = model.aux_loss()
            aux_opt.zero_grad()
            aux_loss.backward()
            aux_opt.step()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"rate became {float(loss.detach())} at step {step}")
        if step % cfg.val_every == 0 or step == cfg.steps:
            validate(step)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    model.update(force=True)
    return history
