"""Widen a trained MGSSNet's transforms without changing what it computes (a warm start for a
wider trunk).

Why: the N=64 transforms cap the reconstruction near 27.6 dB (``catalogs/models/transform_ceiling.md``),
and a wider trunk trained from scratch is thousands of steps behind the trained one. Widening in
the manner of Net2Net (Chen et al., ICLR 2016) keeps everything learned: every hidden stage of
``g_a`` / ``g_s`` gets ``width - N`` new channels, computed from the old ones by freshly
initialised weights, and every weight from a new channel into an old one starts at zero, so the
old channels, the latent and the reconstruction are exactly those of the narrow model. Gradients
reach those zero weights through the new channels' activations, so the new capacity is used as
training goes on. The hyper networks, the context model and the entropy models keep their widths.

MHG-AM is the one block where channels are not independent: its heads split the channels, so a
head keeps its old channels first and gets its new ones after them, the new query weights start at
zero (so the attention logits are unchanged) and the old query weights are scaled for the wider
head's ``1 / sqrt(d)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from geocompress.models.blocks import MHGAM
from geocompress.models.registry import build
from geocompress.models.variable_rate import LEVEL_LAMBDAS

__all__ = ["add_levels_above", "add_levels_below", "latent_entries_added", "widen_latent", "widen_transforms"]


def widen_transforms(model: nn.Module, width: int, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose transforms have ``width`` hidden channels and the same outputs.

    Args:
        model: a trained MGSSNet or variable-rate MGSSNet (``model.arch``, ``model.config``).
        width: the new hidden width of ``g_a`` / ``g_s``; at least the present one and divisible
            by MHG-AM's heads.
        seed: seed of the new channels' initialisation (reproducible widening).

    Returns:
        A new model (float32, eval mode) with ``config["transform_N"] = width``.

    Raises:
        ValueError: ``width`` narrower than the model's transforms or not divisible by the heads.
    """
    cfg = dict(model.config)
    old = int(cfg.get("transform_N", cfg["N"]))
    if width < old or width % int(cfg["heads"]):
        raise ValueError(f"widen: width {width} must be >= {old} and divisible by {cfg['heads']} heads")
    torch.manual_seed(seed)
    wide = build(model.arch, **{**cfg, "transform_N": width})
    sd = model.state_dict()
    new_sd = wide.state_dict()
    heads = {name for name, m in wide.named_modules() if isinstance(m, MHGAM)}
    with torch.no_grad():
        for key, fresh in new_sd.items():
            src = sd[key]
            if src.shape == fresh.shape or not key.startswith(("g_a.", "g_s.")):
                new_sd[key] = src.clone()
                continue
            module = key.rsplit(".", 1)[0]
            new_sd[key] = _grow(key, src, fresh.clone(), old, width,
                                int(cfg["heads"]) if module.rsplit(".", 1)[0] in heads else 0,
                                _kind(wide, module))
    wide.load_state_dict(new_sd)
    return wide.eval()


def _kind(model: nn.Module, name: str) -> str:
    """The layer type that decides which tensor axis is which ('conv', 'deconv', 'linear', 'gdn')."""
    m = model.get_submodule(name)
    if isinstance(m, nn.ConvTranspose2d):
        return "deconv"
    if isinstance(m, nn.Conv2d):
        return "conv"
    if isinstance(m, nn.Linear):
        return "linear"
    return "gdn"


def _grow(key: str, src: Tensor, fresh: Tensor, old: int, width: int, heads: int,
          kind: str) -> Tensor:
    """One widened tensor: the old values in the old channels' places, fresh values for new
    outputs, zeros for every new input of an old output.

    Args:
        key: the parameter's name (``...qkv.weight``: MHG-AM's head layout).
        src: the trained tensor.
        fresh: the wider model's initial tensor (shape of the result).
        old: the old hidden width.
        width: the new hidden width.
        heads: MHG-AM's heads where the tensor belongs to an MHG-AM block, else 0.
        kind: 'conv', 'deconv', 'linear' or 'gdn' (``_kind``).

    Returns:
        The widened tensor.
    """
    out_axis, in_axis = (1, 0) if kind == "deconv" and src.dim() > 1 else (0, 1)
    qkv = heads and key.endswith(("qkv.weight", "qkv.bias"))
    out_map = _index_map(src.shape[out_axis], fresh.shape[out_axis], old, width,
                         heads if qkv else 0)
    if key.endswith("gamma") and kind == "gdn":
        # gamma is stored as sqrt(gamma + pedestal); a stored sqrt(pedestal) is a zero gamma
        zero = math.sqrt(2.0 ** -36)
        return _place(src, fresh, out_map, _index_map(src.shape[1], fresh.shape[1], old, width),
                      0, 1, zero)
    if src.dim() == 1:
        out = fresh
        out[out_map] = src
        if qkv:
            _scale_queries(out, src.shape[0] // 3, fresh.shape[0] // 3, out_map)
        return out
    in_map = _index_map(src.shape[in_axis], fresh.shape[in_axis], old, width,
                        heads if heads and key.endswith("proj.weight") else 0)
    if fresh.shape[in_axis] == 1:  # depthwise: one input per group
        in_map = torch.zeros(1, dtype=torch.long)
    out = _place(src, fresh, out_map, in_map, out_axis, in_axis, 0.0)
    if qkv:
        _scale_queries(out, src.shape[0] // 3, fresh.shape[0] // 3, out_map)
    return out


def _scale_queries(w: Tensor, n_old: int, n_new: int, out_map: Tensor) -> None:
    """MHG-AM's logits are ``q k / sqrt(d)``: zero the new queries and scale the old ones by
    ``sqrt(d_new / d_old)`` so that the wider heads give the same logits.

    Args:
        w: the widened ``qkv`` weight or bias (in place).
        n_old: the old channels per q / k / v.
        n_new: the new channels per q / k / v.
        out_map: where each old output row went.
    """
    q_old = out_map[:n_old]
    new_q = torch.ones(n_new, dtype=torch.bool)
    new_q[q_old] = False
    w[:n_new][new_q] = 0.0
    w[q_old] *= math.sqrt(n_new / n_old)


def _index_map(n_src: int, n_new: int, old: int, width: int, heads: int = 0) -> Tensor:
    """Where each of an axis's ``n_src`` old entries goes in the widened axis of ``n_new``.

    Axes of the hidden width map 0..old-1 to themselves; MHG-AM's ``q | k | v`` (``heads``, a
    multiple of the width) keeps each head's old channels at the head's start; other axes (bands,
    latent channels) are unchanged.

    Args:
        n_src: the old axis length.
        n_new: the widened axis length.
        old: the old hidden width.
        width: the new hidden width.
        heads: MHG-AM's heads where the axis is laid out in them (``q | k | v`` or the
            attention output), else 0.

    Returns:
        Indices into the widened axis, one per old entry.
    """
    if n_src == n_new or not heads:
        return torch.arange(n_src)
    parts = n_src // old  # 3 for q | k | v, 1 for the attention output
    return torch.cat([p * width + _head_map(old, width, heads) for p in range(parts)])


def _head_map(old: int, width: int, heads: int) -> Tensor:
    """Old channel ``h * d_old + j`` of a head layout goes to ``h * d_new + j``."""
    d_old, d_new = old // heads, width // heads
    return torch.cat([h * d_new + torch.arange(d_old) for h in range(heads)])


def _place(src: Tensor, fresh: Tensor, out_map: Tensor, in_map: Tensor, out_axis: int,
           in_axis: int, zero: float | None) -> Tensor:
    """``fresh`` with ``src`` at ``(out_map, in_map)`` and ``zero`` at (old outputs, new inputs).

    Args:
        src: the trained tensor.
        fresh: the widened initial tensor.
        out_map: old output positions in the widened tensor.
        in_map: old input positions in the widened tensor.
        out_axis: the output axis (1 for transposed convolutions).
        in_axis: the input axis.
        zero: the stored value of a zero weight (GDN's gamma is reparametrised); None keeps
            ``fresh``'s weights there.

    Returns:
        The widened tensor.
    """
    out = fresh.movedim((out_axis, in_axis), (0, 1)).clone()
    s = src.movedim((out_axis, in_axis), (0, 1))
    if out.shape[1] != s.shape[1] and zero is not None:
        new_in = torch.ones(out.shape[1], dtype=torch.bool)
        new_in[in_map] = False
        out[out_map.unsqueeze(1), new_in.nonzero().squeeze(1).unsqueeze(0)] = zero
    out[out_map.unsqueeze(1), in_map.unsqueeze(0)] = s
    return out.movedim((0, 1), (out_axis, in_axis)).contiguous()


# The latent's width M sets these layouts: an axis of ``parts`` equal blocks, each growing from
# ``old`` to ``new`` entries (``entropy_parameters`` reads ``[h_s features | context features]``
# and writes ``[scales | means]``); every other M-sized axis is one block.
_LATENT_PARTS = {("entropy_parameters.0.", "in"): 2, ("entropy_parameters.4.", "out"): 2}


def widen_latent(model: nn.Module, M: int, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with ``M`` latent channels that codes every image as before.

    The new latent channels are silent at first and can learn: ``g_a``'s weights into them are
    zero (so they are exactly 0 and quantize to 0), the entropy parameters predict them at mean 0
    with the smallest scale (so they cost no bits), and the hyper encoder and the context model
    read them through zero weights, but ``g_s`` reads them through freshly initialised weights,
    so the distortion's gradient reaches ``g_a``'s new weights from the first step (with both
    sides at zero they would never move). The hyper and context networks' hidden widths, which
    CompressAI derives from ``M``, grow the Net2Net way (new units from fresh weights, their
    weights into old units zero); a variable-rate model's gains for the new channels start at
    each level's mean gain.

    Why: ``M`` = 96 latent channels per 16 x 16 x 3 pixels caps the reconstruction near 27.7 dB on
    the test split however many bits are spent (``catalogs/models/mgssnet-vr.md``): the high rates
    need more of them.

    Args:
        model: a trained MGSSNet or variable-rate MGSSNet.
        M: the new latent width; at least the present one and a multiple of 3 (CompressAI's
            entropy parameters are ``M * 10 // 3`` and ``M * 8 // 3`` wide).
        seed: seed of the fresh weights (reproducible widening).

    Returns:
        A new model (float32, eval mode) with ``config["M"] = M``.

    Raises:
        ValueError: ``M`` narrower than the model's latent or not a multiple of 3.
    """
    cfg = dict(model.config)
    old = int(cfg["M"])
    if M < old or M % 3:
        raise ValueError(f"widen: M {M} must be >= {old} and a multiple of 3")
    torch.manual_seed(seed)
    wide = build(model.arch, **{**cfg, "M": M})
    sd, new_sd = model.state_dict(), wide.state_dict()
    last_a = f"g_a.{len(wide.g_a) - 1}."
    with torch.no_grad():
        for key, fresh in new_sd.items():
            src = sd[key]
            if src.shape == fresh.shape or key.startswith(("entropy_bottleneck.", "gaussian_conditional.")):
                new_sd[key] = src.clone()  # z's entropy model and the scale table do not depend on M
            elif key.endswith(".mask"):  # the context model's causal mask: a fixed pattern
                new_sd[key] = fresh
            elif key in ("log_gain", "log_inverse_gain"):
                out = src.mean(dim=1, keepdim=True).repeat(1, M)
                out[:, :old] = src
                new_sd[key] = out
            else:
                module = key.rsplit(".", 1)[0] + "."
                silent = module in (last_a, "entropy_parameters.4.")
                new_sd[key] = _grow_latent(module, src, torch.zeros_like(fresh) if silent else fresh,
                                           _kind(wide, module[:-1]), keep_new_inputs=module == "g_s.0.")
    wide.load_state_dict(new_sd)
    return wide.eval()


def _grow_latent(module: str, src: Tensor, fresh: Tensor, kind: str, keep_new_inputs: bool) -> Tensor:
    """One tensor of a latent widening: the old values in the old entries' places, ``fresh`` for
    new outputs, zeros for every new input of an old output (``fresh`` there with
    ``keep_new_inputs``).

    Args:
        module: the layer's name with a trailing dot (its axis layouts: ``_LATENT_PARTS``).
        src: the trained tensor.
        fresh: the widened initial tensor (zeros for a silent layer).
        kind: 'conv' or 'deconv' (``_kind``).
        keep_new_inputs: keep ``fresh``'s weights from new inputs (``g_s``'s first layer).

    Returns:
        The widened tensor.
    """
    out_axis, in_axis = (1, 0) if kind == "deconv" and src.dim() > 1 else (0, 1)

    def parts_map(axis: int, side: str) -> Tensor:
        parts = next((n for (m, s), n in _LATENT_PARTS.items() if module == m and s == side), 1)
        n_old, n_new = src.shape[axis] // parts, fresh.shape[axis] // parts
        return torch.cat([p * n_new + torch.arange(n_old) for p in range(parts)])

    out_map = parts_map(out_axis, "out")
    if src.dim() == 1:
        out = fresh.clone()
        out[out_map] = src
        return out
    return _place(src, fresh, out_map, parts_map(in_axis, "in"), out_axis, in_axis,
                  None if keep_new_inputs else 0.0)


def add_levels_below(model: nn.Module, below: int) -> nn.Module:
    """A copy of a variable-rate model whose scale starts ``below`` levels lower (at the lambdas
    of :data:`~geocompress.models.variable_rate.BELOW_LAMBDAS`), every existing level coding as
    before under its new number (``l + added``).

    The new levels' gains continue the table's lowest step: each new row of the log-gain tables
    lies one step of ``row 0 - row 1`` below the row above it (the levels are one halving of
    lambda apart, as rows 0 and 1 are), the exponential interpolation carried on downwards.

    Args:
        model: a trained variable-rate MGSSNet.
        below: how many of its levels shall lie below ``LEVEL_LAMBDAS``'s level 0; at least its
            present ``levels_below``.

    Returns:
        A new model (float32, eval mode) with ``config["levels_below"] = below``.

    Raises:
        ValueError: fewer levels below than the model has, or more than the table holds.
    """
    cfg = dict(model.config)
    have = int(cfg.get("levels_below", 0))
    if below < have:
        raise ValueError(f"add_levels_below: the model already has {have} levels below, asked for {below}")
    added = below - have
    return _with_levels(model, {**cfg, "levels": int(cfg["levels"]) + added, "levels_below": below}, added, 0)


def add_levels_above(model: nn.Module, above: int) -> nn.Module:
    """A copy of a variable-rate model whose scale ends ``above`` levels beyond the top of
    :data:`~geocompress.models.variable_rate.LEVEL_LAMBDAS` (at the lambdas of
    :data:`~geocompress.models.variable_rate.ABOVE_LAMBDAS`), every existing level keeping its
    number and coding as before.

    The new levels' gains continue the table's top step, as :func:`add_levels_below` continues
    its lowest: each new row of the log-gain tables lies one step of ``row -1 - row -2`` beyond
    the row before it (the levels are one doubling of lambda apart, as the top two are), so a new
    level starts with finer quantization steps (more bits) than the top it extends.

    Args:
        model: a trained variable-rate MGSSNet whose scale reaches ``LEVEL_LAMBDAS``'s top.
        above: how many levels shall lie above ``LEVEL_LAMBDAS``'s top; at least its present
            ``levels_above``.

    Returns:
        A new model (float32, eval mode) with ``above`` more levels than ``LEVEL_LAMBDAS``'s top.

    Raises:
        ValueError: fewer levels above than the model has, more than the table holds, or a
            model whose scale stops below ``LEVEL_LAMBDAS``'s top.
    """
    if model.levels < model.levels_below + len(LEVEL_LAMBDAS):
        raise ValueError(f"add_levels_above: the model's {model.levels} levels stop below the table's top")
    have = model.levels_above
    if above < have:
        raise ValueError(f"add_levels_above: the model already has {have} levels above, asked for {above}")
    added = above - have
    return _with_levels(model, {**model.config, "levels": model.levels + added}, 0, added)


def _with_levels(model: nn.Module, config: dict, below: int, above: int) -> nn.Module:
    """A copy of a variable-rate model built with ``config``, its gain tables grown by ``below``
    rows at the bottom and ``above`` at the top, each new row one step of the table's end step
    (row 0 - row 1 below, row -1 - row -2 above) beyond its neighbour: the levels' exponential
    interpolation carried on; every old row (level) as it was."""
    wide = build(model.arch, **config)
    sd = model.state_dict()
    with torch.no_grad():
        for key in ("log_gain", "log_inverse_gain"):
            rows = sd[key]
            low = [rows[0] + (below - i) * (rows[0] - rows[1]) for i in range(below)]
            high = [rows[-1] + (i + 1) * (rows[-1] - rows[-2]) for i in range(above)]
            sd[key] = torch.cat([*(r[None] for r in low), rows, *(r[None] for r in high)])
    wide.load_state_dict(sd)
    return wide.eval()


def latent_entries_added(config: dict, old_M: int, cross: bool = True) -> dict[str, Tensor]:
    """Which entries of a model of ``config`` a latent widening from ``old_M`` channels added
    (:func:`widen_latent`'s layout), per parameter that has any: the weights a run may let learn
    faster than the trained ones (``TrainConfig.lr_multipliers``).

    Args:
        config: the widened model's configuration (``arch`` key optional: ``mgssnet-vr``).
        old_M: the latent width before the widening.
        cross: also the weights from new inputs into old outputs (zero after widening). Without
            them a faster rate moves only what computes the new channels and their entropy
            parameters, and ``g_s``'s reading of the new channels (its first layer's new
            inputs, which is how the new channels reach the image): the old outputs of the
            hyper and context networks keep their trained pace.

    Returns:
        Parameter name -> boolean tensor of its shape, True where the entry is new.
    """
    arch = config.get("arch", "mgssnet-vr")
    cfg = {k: v for k, v in config.items() if k != "arch"}
    narrow = build(arch, **{**cfg, "M": int(old_M)})
    with torch.no_grad():  # every trained entry NaN: what is not NaN after widening is new
        for p in narrow.parameters():
            p.fill_(float("nan"))
    wide = widen_latent(narrow, int(cfg["M"]))
    out = {}
    for name, p in wide.named_parameters():
        new = ~torch.isnan(p.detach())
        if name in ("log_gain", "log_inverse_gain"):  # the new channels' gains: the mean of NaNs
            new = torch.zeros_like(new)
            new[:, int(old_M):] = True
        elif not cross and new.dim() > 1 and not name.startswith("g_s.0."):
            out_axis = 1 if _kind(wide, name.rsplit(".", 1)[0]) == "deconv" else 0
            rows = new.movedim(out_axis, 0).flatten(1).all(dim=1)  # outputs that are new
            shape = [1] * new.dim()
            shape[out_axis] = -1
            new = new & rows.view(shape)
        if bool(new.any()):
            out[name] = new
    return out
