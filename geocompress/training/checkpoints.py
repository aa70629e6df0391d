"""Training states and inference checkpoints: atomic saves, warm starts (weights, Adam moments
and the lineage a catalog records), and the fp16 export a shipped quality is made of."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from geocompress.codec import restore_constants, save_checkpoint
from geocompress.codec.compressai_adapter import logits_cumulative
from geocompress.models import build

from .ema import averaged_meta, averaged_state
from .lr_history import inherited, read_lr_segments

STATE = "train_state.pt"
EXPORT = "model.pt"
LOG = "log.csv"

__all__ = ["EXPORT", "LOG", "STATE", "export_checkpoint", "export_state", "lineage_totals",
           "load_meta", "load_weights", "public_lineage", "settle_quantiles", "warm_optimizers"]


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Load the weights of a training state or an inference checkpoint into ``model``.

    fp16 tensors come back as float32 and constants zeroed by old fp16 exports are restored; a
    fixed-rate trunk may warm-start a variable-rate model, whose gains then keep their init.

    Args:
        model: the model (same architecture and config as the file).
        path: a ``train_state.pt`` or a ``model.pt``.

    Raises:
        RuntimeError: the file's tensors do not fit ``model`` (named by ``load_state_dict``).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt["model"] if "model" in ckpt else ckpt["state_dict"]
    sd = restore_constants(model, {k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    gains = {"log_gain", "log_inverse_gain"}
    if hasattr(model, "set_rate") and gains.isdisjoint(sd):
        # a fixed-rate trunk warm-starting a variable-rate model: its gains keep their init
        missing, unexpected = model.load_state_dict(sd, strict=False)
        if set(missing) - gains or unexpected:
            model.load_state_dict(sd)  # raises, naming what does not fit
        return
    model.load_state_dict(sd)


def lineage_totals(steps: int, wall_s: float, lineage: dict[str, Any] | None) -> tuple[int, float]:
    """A run's own steps and wall time plus those of the weights it started from.

    Why: a catalog states what a model cost in all, warm starts included.

    Args:
        steps: the run's own steps.
        wall_s: the run's own training seconds.
        lineage: the run's warm-start lineage (:func:`warm_optimizers`), or None.

    Returns:
        (total steps, total seconds).
    """
    lineage = lineage or {}
    return steps + (lineage.get("steps") or 0), wall_s + (lineage.get("wall_s") or 0)


def public_lineage(lineage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A lineage for a shipped checkpoint's meta: the parent named by its run or file, not by a
    path on the machine that trained it.

    Args:
        lineage: a lineage as :func:`warm_optimizers` returns it, or None.

    Returns:
        The same with ``path`` cut to the run folder's (for a training state) or the file's name;
        None without a lineage.
    """
    if not lineage:
        return None
    path = Path(lineage["path"])
    return {**lineage, "path": path.parent.name if path.name == STATE else path.name}


def warm_optimizers(path: str | os.PathLike, opt: torch.optim.Optimizer,
                     aux_opt: torch.optim.Optimizer | None, lr: float,
                     aux_lr: float) -> tuple[dict[str, Any], bool]:
    """Adam moments of a training state used as warm start (not for inference checkpoints).

    A fresh Adam after a warm start takes full-size steps with no second-moment history: the
    loss jumps (figures in ``catalogs/models/mgssnet-training.md``). The learning rates stay this run's own. Returns the run's lineage
    (where its weights came from, after how many steps and how much training time, and the lr
    those steps ran at as far as recorded) for catalogs, and whether Adam moments were found (an
    inference checkpoint has none).

    Args:
        path: the warm start (a ``train_state.pt`` or a ``model.pt``).
        opt: the main optimizer, loaded in place.
        aux_opt: the auxiliary optimizer, or None for a model without one.
        lr: the main learning rate this run keeps.
        aux_lr: the auxiliary learning rate this run keeps.

    Returns:
        (lineage, moments): ``{"path", "lambda", "steps", "wall_s", "lr_schedule"}`` and whether
        Adam moments were loaded.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt.get("meta", {})
    if "step" in ckpt:  # a training state: its own steps plus what it inherited
        parent = (ckpt.get("hparams") or {}).get("warm_start")
        steps, wall = lineage_totals(ckpt["step"], ckpt["wall_s"], parent)
        schedule = inherited(read_lr_segments(Path(path).parent / LOG), ckpt["step"], parent)
    else:  # an exported checkpoint already carries its totals
        steps = meta.get("total_steps", meta.get("steps"))
        wall = meta.get("total_wall_s", meta.get("wall_s"))
        own = meta.get("lr_schedule") or []
        schedule = inherited(own, own[-1]["to_step"] if own else 0, meta.get("warm_start"))
    lineage = {"path": str(path), "lambda": ckpt.get("lmbda") or meta.get("lambda"),
               "steps": steps, "wall_s": wall, "lr_schedule": schedule}
    if "opt" not in ckpt:
        return lineage, False
    for o, key, rate in ((opt, "opt", lr), (aux_opt, "aux_opt", aux_lr)):
        if o is not None and ckpt.get(key) is not None:
            o.load_state_dict(ckpt[key])
            for g in o.param_groups:
                g["lr"] = rate
    return lineage, True


@torch.no_grad()
def settle_quantiles(model: torch.nn.Module, iters: int = 64) -> float:
    """Set the entropy bottleneck's quantiles to where its learned density puts them; returns the
    aux loss after (0 up to float rounding).

    The quantiles bound the CDF tables that ``update()`` builds. During a short training run the
    auxiliary optimizer (lr 1e-3) trails the density that the main optimizer keeps sharpening
    (``catalogs/models/mgssnet-training.md``), and tables built from stale quantiles are
    too narrow (symbols escape to costly bypass coding) or too wide. The cumulative density is
    monotone by construction, so each quantile is found exactly by bisection instead.

    Args:
        model: a model with entropy bottlenecks (changed in place; transforms untouched).
        iters: bisection steps after bracketing.

    Returns:
        The aux loss after (0 up to float rounding).
    """
    from compressai.entropy_models import EntropyBottleneck

    for eb in (m for m in model.modules() if isinstance(m, EntropyBottleneck)):
        q = eb.quantiles
        target = eb.target.to(q).view(1, 1, -1).expand_as(q)

        def f(x: torch.Tensor, eb: EntropyBottleneck = eb) -> torch.Tensor:
            return logits_cumulative(eb, x, stop_gradient=True)

        lo, hi = q.detach().clone() - 1, q.detach().clone() + 1
        for _ in range(64):  # widen the brackets until they hold the target
            low_bad, high_bad = f(lo) > target, f(hi) < target
            if not (low_bad.any() or high_bad.any()):
                break
            span = (hi - lo).abs()
            lo = torch.where(low_bad, lo - span, lo)
            hi = torch.where(high_bad, hi + span, hi)
        for _ in range(iters):
            mid = (lo + hi) / 2
            above = f(mid) > target
            hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
        q.copy_((lo + hi) / 2)
    return float(model.aux_loss())


def export_state(state_path: str | os.PathLike, out: str | os.PathLike,
                 quality: int) -> tuple[str, dict[str, Any], torch.nn.Module]:
    """fp16 inference checkpoint of a training state, with the catalog's facts in its ``meta``
    (lambda, steps, wall time, hardware, data, recipe, lineage): its weight average
    (:mod:`.ema`) where the run keeps one, else its live weights.

    Why: a run stopped early (or trained elsewhere) is shipped from its state, without resuming.

    Args:
        state_path: a ``train_state.pt``; its folder's ``log.csv`` gives the lr schedule.
        out: the checkpoint to write (atomically).
        quality: the quality index recorded in the meta.

    Returns:
        (digest, meta, model): the weights' digest, the meta as written, the model in float32.
    """
    from .lambdas import compressai_to_paper

    state = torch.load(state_path, map_location="cpu", weights_only=False)
    model = build(state["arch"], **state["config"])
    model.load_state_dict(restore_constants(model, averaged_state(state)))
    hp = state["hparams"]
    lineage = public_lineage(hp.get("warm_start"))
    meta = {"lambda": state["lmbda"], "lambda_scale": "compressai: bpp + lambda * 255^2 * MSE",
            "lambda_paper_scale": compressai_to_paper(state["lmbda"]), "steps": state["step"],
            "wall_s": round(state["wall_s"], 1), "hardware": hp["hardware"],
            "dataset": hp.get("dataset_name") or hp["dataset"], "quality": int(quality),
            "batch": hp["batch"], "crop": hp["crop"], "lr": hp["lr"], "aux_lr": hp["aux_lr"],
            "best_val_loss": state["best_val"], "warm_start": lineage,
            "quantization": hp.get("quantization", "noise"), "stretch": hp.get("stretch", 0.0),
            "lr_schedule": read_lr_segments(Path(state_path).parent / LOG),
            "ema": averaged_meta(state)}
    if hasattr(model, "set_rate"):  # one lambda per level, not one for the weights
        meta.update({"lambda": None, "lambda_paper_scale": None,
                     "level_lambdas": list(model.level_lambdas),
                     "default_quality": 4.0 + model.levels_below})  # lambda 0.013 (CompressAI's q4)
    meta["total_steps"], total_wall = lineage_totals(state["step"], state["wall_s"], lineage)
    meta["total_wall_s"] = round(total_wall, 1)
    digest = export_checkpoint(model, Path(out), meta)
    return digest, load_meta(Path(out)), model


def load_meta(path: Path) -> dict[str, Any]:
    """The ``meta`` of a checkpoint.

    Args:
        path: a checkpoint file.

    Returns:
        Its meta (empty when it has none).
    """
    return dict(torch.load(path, map_location="cpu", weights_only=False).get("meta", {}))


def export_checkpoint(model: torch.nn.Module, path: Path, meta: dict[str, Any]) -> str:
    """Write the fp16 inference checkpoint of ``model`` (quantiles settled, CDF tables from
    ``update(force=True)``).

    Args:
        model: the trained model (moved to the CPU, contiguous, float32, eval mode).
        path: the checkpoint to write.
        meta: the catalog's facts; ``arch``, ``config`` and ``aux_loss`` are added.

    Returns:
        The digest of the weights as they will load.
    """
    model = model.to("cpu").to(memory_format=torch.contiguous_format).float().eval()
    meta = {"arch": model.arch, "config": dict(model.config), **meta,
            "aux_loss": round(settle_quantiles(model), 6)}
    return save_checkpoint(model, path, meta=meta, half=True)
