"""Train any registry architecture with the paper's recipe, resumably.

Recipe (Shi et al. 2024, III-C, in CompressAI's form): loss ``R + lambda * 255**2 * MSE``
(:mod:`.loss`); Adam on the main parameters (lr 1e-4) and a second Adam on the entropy
bottleneck's ``quantiles`` (lr 1e-3, minimising ``model.aux_loss()``), the split of CompressAI's
``configure_optimizers``; batch 8 of random crops with flips; gradient-norm clipping at 1.0;
``ReduceLROnPlateau`` on the validation loss.

Exact resume: the training state (model, both optimizers, scheduler, grad scaler, step, torch RNG
states, best validation loss, accumulated wall time) is written atomically every
``checkpoint_every_s`` seconds and on exit. The data position needs no state of its own: batch
``k`` of epoch ``e`` is a pure function of (seed, e, k) (:class:`.data.EpochSampler`), so a run
resumed at step ``s`` draws the batches, augmentations and quantization noise the uninterrupted
run drew, and on the same machine reproduces its losses exactly.

On CPU a model with depthwise convolutions (MGSSNet's SSIF-AM) runs in channels-last layout:
PyTorch's contiguous-layout backward of a depthwise convolution is far slower
(``catalogs/models/mgssnet-training.md``). Only those models: channels-last backward crashes
(segfault) on Cheng2020-attn with torch 2.14 CPU, and gains nothing on dense convolutions.
Precision (``precision``): ``mixed`` runs the forward pass under bf16 autocast (fp16 with a
``GradScaler`` on GPUs without bf16) with the layers of :mod:`.mixed_precision` kept in float32;
the default ``auto`` picks it on CUDA and on CPUs with AMX / AVX512-BF16. The CSV log and its
curves: :mod:`.run_log`.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from geocompress.atomic import atomic_save
from geocompress.codec import restore_constants
from geocompress.models import build
from geocompress.models.variable_rate import lambda_at

from .checkpoints import (EXPORT, LOG, STATE, export_checkpoint, lineage_totals, load_weights,
                          public_lineage, warm_optimizers)
from .config import TrainConfig
from .data import EpochSampler, open_tiles
from .lr_history import lr_segments
from .loss import RateDistortionLoss
from .mixed_precision import autocast_dtype, prepare_layers
from .quantization import MODES, forward
from .run_log import RunLog, plot_log

PLOT = "curves.png"


@dataclass
class TrainResult:
    """What a call of :func:`train` did: where it stopped and what it wrote."""

    step: int
    total_steps: int
    finished: bool
    losses: list[float] = field(default_factory=list)   # per-step training loss of this call
    val: dict[str, float] | None = None                 # last validation
    state_path: Path | None = None
    checkpoint: Path | None = None                       # fp16 inference checkpoint (finished)
    digest: str | None = None


def split_parameters(model: torch.nn.Module) -> tuple[list, list]:
    """(main, aux) parameters: ``*.quantiles`` of entropy bottlenecks are the auxiliary ones."""
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux


def freeze_parameters(model: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    """Keep the parameters whose names start with one of ``prefixes`` fixed (no gradient, not in
    the optimizer); returns how many tensors were frozen.

    Why: a variable-rate model warm-started from a fixed-rate trunk whose transforms are at their
    capacity first learns its gains and entropy models around the trunk (as CompressAI's
    ``vbr`` post-training does), instead of pulling the trunk towards a compromise of every rate.

    Raises:
        ValueError: a prefix that names no parameter (a typo would silently freeze nothing).
    """
    n = 0
    for prefix in prefixes:
        hit = [p for name, p in model.named_parameters() if name.startswith(prefix)]
        if not hit:
            raise ValueError(f"freeze: no parameter of {type(model).__name__} starts with {prefix!r}")
        for p in hit:
            p.requires_grad_(False)
        n += len(hit)
    return n


def has_depthwise(model: torch.nn.Module) -> bool:
    """Whether the model has grouped convolutions, whose CPU backward needs channels-last."""
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


def fused_adam(device: torch.device) -> bool:
    """Adam's fused kernel (CPU and CUDA): the same update as the per-parameter loop, several
    times faster on MGSSNet's CPU step (``catalogs/models/mgssnet-training.md``)."""
    return device.type in ("cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    n = torch.get_num_threads()
    return (f"CPU, {n} torch thread{'s' if n != 1 else ''} on {os.cpu_count()} cores "
            f"({platform.machine()}, {platform.processor() or platform.system()})")


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: torch.utils.data.Dataset, lmbda: float, device: torch.device,
             batch: int = 8, channels_last: bool = False, quantization: str = "noise") -> dict[str, float]:
    """Mean loss, estimated bpp, MSE and PSNR (mean over tiles of the per-tile PSNR), in eval mode
    of the run's ``quantization`` (:mod:`.quantization`). A variable-rate model is measured at
    each of :func:`val_levels` with that level's lambda: the figures are the means over levels,
    and ``levels`` holds each level's own."""
    if hasattr(model, "set_rate"):
        per = {}
        for q in val_levels(model):
            model.set_rate(float(q))
            per[q] = _evaluate(model, data, float(lambda_at(q)), device, batch, channels_last,
                               quantization)
        out = {k: sum(v[k] for v in per.values()) / len(per) for k in ("loss", "bpp", "mse", "psnr")}
        return {**out, "levels": per}
    return _evaluate(model, data, lmbda, device, batch, channels_last, quantization)


def val_levels(model: torch.nn.Module) -> tuple[int, ...]:
    """The levels a variable-rate model is validated at: both ends and the middle."""
    top = int(model.levels) - 1
    return (0, top // 2, top)


def _evaluate(model: torch.nn.Module, data: torch.utils.data.Dataset, lmbda: float, device: torch.device,
              batch: int = 8, channels_last: bool = False, quantization: str = "noise") -> dict[str, float]:
    was = model.training
    model.eval()
    crit = RateDistortionLoss(lmbda)
    variable_rate = hasattr(model, "set_rate")  # lmbda unused: each level has its own
    n, acc = 0, {"loss": 0.0, "bpp": 0.0, "mse": 0.0, "psnr": 0.0}
    for i in range(0, len(data), batch):
        x = torch.stack([data[j] for j in range(i, min(i + batch, len(data)))]).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = forward(model, x, quantization)
        parts = crit(out, x)
        mse_t = ((out["x_hat"].float().clamp(0, 1) - x) ** 2).flatten(1).mean(1)
        k = len(x)
        for key in ("loss", "bpp", "mse"):
            acc[key] += float(parts[key]) * k
        acc["psnr"] += float((-10 * torch.log10(mse_t.clamp_min(1e-10))).sum())
        n += k
    model.train(was)
    return {k: v / max(n, 1) for k, v in acc.items()}


def train(arch: str, config: dict[str, Any] | None, dataset: str | os.PathLike, lmbda: float,
          out_dir: str | os.PathLike, recipe: TrainConfig | None = None,
          **options: Any) -> TrainResult:
    """Train ``arch`` (with ``config``) on the train split of a tile store for ``steps`` optimizer
    steps (or ``epochs`` passes) at ``lmbda`` (CompressAI convention, see :mod:`.loss`).
    ``recipe`` (a :class:`.config.TrainConfig`) holds every other setting; ``options`` override
    single fields of it (``train(..., steps=100, crop=128)``).

    Writes into ``out_dir``: ``train_state.pt`` (resumable), ``log.csv``, ``curves.png`` and, once
    finished, ``model.pt`` (fp16 inference checkpoint, ``model.update(force=True)`` first).
    ``resume`` continues from ``train_state.pt`` if present; ``warm_start`` initialises a new run
    from another run's weights (e.g. a lower lambda from a higher-rate quality) and, from a
    training state, its Adam moments. ``halt_after``
    (steps) and ``time_budget_s`` (seconds) end this call early with the state saved, to be
    resumed later. Validation on the val split (``val_limit`` tiles, centre ``val_crop``, default
    the full tile) runs every ``val_every`` steps (default: every epoch) and drives the plateau
    scheduler. ``lr_override`` sets the main learning rate of a resumed or warm-started run (a
    final low-rate phase: the plateau scheduler rarely fires in a short run). A step whose loss
    or gradient is not finite is skipped (counted in the log as a non-finite loss);
    ``max_bad_steps`` of them in a row stop the run with an error. ``quantization`` (``noise``,
    CompressAI's, or ``mixed``: :mod:`.quantization`) defaults to the resumed run's own, else
    ``noise``; switching a resumed run restarts its plateau scheduler (validation losses of the
    two modes are not comparable). A run warm-started from weights without Adam moments (an
    inference checkpoint such as the shipped weights) ramps its lr linearly over its first
    ``warmup_steps``: a fresh Adam's first steps move every parameter by about the full lr
    whatever its gradient's noise, which undoes part of what the weights had learned.
    ``stretch`` is the probability that a training crop is re-stretched band by band
    (:func:`.data.restretch`: false-colour and stretched composites); default: the resumed run's
    own, else 0.
    """
    cfg = (recipe or TrainConfig()).replace(**options)
    steps, epochs, batch, crop, lr, aux_lr = cfg.steps, cfg.epochs, cfg.batch, cfg.crop, cfg.lr, cfg.aux_lr
    resume, device, warm_start, seed = cfg.resume, cfg.device, cfg.warm_start, cfg.seed
    val_every, val_limit, val_crop = cfg.val_every, cfg.val_limit, cfg.val_crop
    checkpoint_every_s, clip, min_lr = cfg.checkpoint_every_s, cfg.clip, cfg.min_lr
    plateau_patience, plateau_factor = cfg.plateau_patience, cfg.plateau_factor
    precision, threads, halt_after, time_budget_s = cfg.precision, cfg.threads, cfg.halt_after, cfg.time_budget_s
    progress, quality, dataset_name, export = cfg.progress, cfg.quality, cfg.dataset_name, cfg.export
    channels_last, max_bad_steps, lr_override = cfg.channels_last, cfg.max_bad_steps, cfg.lr_override
    quantization, warmup_steps, stretch = cfg.quantization, cfg.warmup_steps, cfg.stretch
    t_call = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    amp_dtype = autocast_dtype(precision, dev)
    use_amp = amp_dtype is not None

    state_path = out / STATE
    state = torch.load(state_path, map_location="cpu", weights_only=False) \
        if resume and state_path.exists() else None
    if state is not None:
        if state["arch"] != arch or state["lmbda"] != float(lmbda):
            raise ValueError(f"{state_path} is a run of {state['arch']} at lambda {state['lmbda']}; "
                             f"asked for {arch} at {lmbda}: use another out_dir or resume=False")
        config = state["config"]
    run_quant = state["hparams"].get("quantization", "noise") if state is not None else "noise"
    quantization = quantization or run_quant
    if stretch is None:
        stretch = state["hparams"].get("stretch", 0.0) if state is not None else 0.0
    if quantization not in MODES:
        raise ValueError(f"unknown quantization {quantization!r}; choose one of {MODES}")
    torch.manual_seed(seed)
    model = build(arch, **(config or {}))
    config = dict(model.config)
    if state is not None:
        model.load_state_dict(restore_constants(model, state["model"]))
    elif warm_start is not None:
        load_weights(model, warm_start)
    model = model.to(dev)
    if channels_last is None:
        channels_last = dev.type == "cpu" and has_depthwise(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prepare_layers(model, dev.type, amp=use_amp)
    model.train()
    freeze_parameters(model, cfg.freeze)

    main_p, aux_p = split_parameters(model)
    opt = torch.optim.Adam(main_p, lr=lr, fused=fused_adam(dev))
    aux_opt = torch.optim.Adam(aux_p, lr=aux_lr, fused=fused_adam(dev)) if aux_p else None
    def new_scheduler() -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min", factor=plateau_factor,
                                                          patience=plateau_patience, min_lr=min_lr)

    sched = new_scheduler()
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp and amp_dtype == torch.float16)
    crit = RateDistortionLoss(lmbda)
    variable_rate = hasattr(model, "set_rate")  # lmbda unused: each level has its own

    train_ds = open_tiles(dataset, "train", crop=crop, augment=True, stretch=stretch)
    val_ds = open_tiles(dataset, "val", crop=val_crop, augment=False, limit=val_limit)
    per_epoch = len(train_ds) // batch
    if per_epoch == 0:
        raise ValueError(f"train split has {len(train_ds)} tiles, fewer than a batch of {batch}")
    total = int(steps) if steps is not None else int(epochs or 1) * per_epoch
    val_every = int(val_every or per_epoch)
    sampler = EpochSampler(len(train_ds), seed)

    step, wall0, best = 0, 0.0, math.inf
    lineage = state["hparams"].get("warm_start") if state is not None else None
    warmup = state["hparams"].get("warmup") if state is not None else None
    if state is None and warm_start is not None:
        lineage, moments = warm_optimizers(warm_start, opt, aux_opt, lr, aux_lr)
        if not moments and warmup_steps > 0:
            warmup = {"steps": int(warmup_steps), "lr": float(lr)}
    if state is not None:
        opt.load_state_dict(state["opt"])
        if aux_opt is not None:
            aux_opt.load_state_dict(state["aux_opt"])
        sched.load_state_dict(state["sched"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if dev.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], dev)
        step, wall0, best = state["step"], state["wall_s"], state["best_val"]
        if quantization != run_quant:
            sched = new_scheduler()
            best = math.inf
    for o in (opt, aux_opt):  # a loaded optimizer state brings its own 'fused' flag
        for g in (o.param_groups if o is not None else []):
            g["fused"], g["foreach"] = fused_adam(dev), None
    if lr_override is not None:
        for g in opt.param_groups:
            g["lr"] = float(lr_override)
        if warmup is not None:
            warmup = {**warmup, "lr": float(lr_override)}
    log = RunLog(out / LOG, step if state is not None else None)
    title = f"{arch} {config} lambda={lmbda} crop={crop} batch={batch}"

    def wall() -> float:
        return wall0 + time.time() - t_call

    def save_state() -> None:
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        atomic_save({"arch": arch, "config": config, "lmbda": float(lmbda), "step": step,
                      "total_steps": total, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                      "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict() if aux_opt else None,
                      "sched": sched.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                      "wall_s": wall(), "best_val": best, "quality": quality,
                      "hparams": {"batch": batch, "crop": crop, "lr": lr, "aux_lr": aux_lr,
                                  "seed": seed, "dataset": str(dataset),
                                  "dataset_name": dataset_name, "hardware": hardware(dev),
                                  "warm_start": lineage, "quantization": quantization,
                                  "warmup": warmup, "stretch": stretch,
                                  "freeze": list(cfg.freeze)}},
                     state_path)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=step, disable=not progress, mininterval=10,
               desc=f"{arch} q{quality if quality is not None else '-'} lambda={lmbda:g}")
    losses: list[float] = []
    bad = 0
    last_val: dict[str, float] | None = None
    last_ckpt = time.time()
    halted = False
    while step < total and not halted:
        epoch, pos = divmod(step, per_epoch)
        sampler.set_epoch(epoch, pos * batch)
        # own generator: a DataLoader iterator draws a base seed from the global torch RNG,
        # which would shift the quantization noise of a resumed run
        loader = DataLoader(train_ds, batch_size=batch, sampler=sampler, drop_last=True,
                            generator=torch.Generator().manual_seed(seed))
        for x in loader:
            x = x.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if warmup is not None and step < warmup["steps"]:
                for g in opt.param_groups:
                    g["lr"] = warmup["lr"] * (step + 1) / warmup["steps"]
            opt.zero_grad(set_to_none=True)
            if variable_rate:  # stratified levels: every batch spans the whole rate range
                levels = (torch.arange(len(x)) + torch.rand(len(x))) * ((model.levels - 1) / len(x))
                model.set_rate(levels)
                crit.per_sample(lambda_at(levels))
            with torch.autocast(device_type=dev.type, dtype=amp_dtype or torch.float32,
                                enabled=use_amp):
                result = forward(model, x, quantization)
            parts = crit(result, x)
            scaler.scale(parts["loss"]).backward()
            scaler.unscale_(opt)
            norm = torch.nn.utils.clip_grad_norm_(main_p, clip if clip else math.inf)
            if torch.isfinite(parts["loss"]) and torch.isfinite(norm):
                scaler.step(opt)
                bad = 0
            else:  # skip the update: one bad batch must not poison the weights
                bad += 1
                if bad >= max_bad_steps:
                    raise FloatingPointError(
                        f"{bad} consecutive non-finite losses / gradients at step {step}: lower "
                        f"the learning rate or resume from {state_path} with another seed")
            scaler.update()
            aux = 0.0
            if aux_opt is not None:
                aux_opt.zero_grad(set_to_none=True)
                aux_loss = model.aux_loss()
                aux_loss.backward()
                aux_opt.step()
                aux = float(aux_loss.detach())
            step += 1
            p = {k: float(v.detach()) for k, v in parts.items()}
            losses.append(p["loss"])
            log.write({"step": step, "epoch": epoch, "phase": "train", **p, "aux_loss": aux,
                       "lr": opt.param_groups[0]["lr"], "wall_s": round(wall(), 1)})
            bar.update(1)
            bar.set_postfix(loss=f"{p['loss']:.3f}", bpp=f"{p['bpp']:.3f}",
                            psnr=f"{p['psnr']:.2f}", refresh=False)
            if step % val_every == 0 or step == total:
                last_val = evaluate(model, val_ds, lmbda, dev, batch, channels_last, quantization)
                sched.step(last_val["loss"])
                best = min(best, last_val["loss"])
                for q, v in last_val.pop("levels", {}).items():
                    log.write({"step": step, "epoch": epoch, "phase": f"val@q{q}", **v,
                               "lr": opt.param_groups[0]["lr"], "wall_s": round(wall(), 1)})
                log.write({"step": step, "epoch": epoch, "phase": "val", **last_val,
                           "lr": opt.param_groups[0]["lr"], "wall_s": round(wall(), 1)})
                plot_log(log.rows, out / PLOT, title)
            halted = (halt_after is not None and len(losses) >= halt_after) or \
                (time_budget_s is not None and time.time() - t_call >= time_budget_s)
            if halted or step == total or time.time() - last_ckpt >= checkpoint_every_s:
                save_state()
                last_ckpt = time.time()
            if halted or step == total or step % per_epoch == 0:
                break
    bar.close()
    plot_log(log.rows, out / PLOT, title)
    result = TrainResult(step, total, step >= total, losses, last_val, state_path)
    if result.finished and export:
        result.checkpoint = out / EXPORT
        total_steps, total_wall = lineage_totals(step, wall(), lineage)
        result.digest = export_checkpoint(model, result.checkpoint, {
            "lambda": float(lmbda), "steps": step, "wall_s": round(wall(), 1),
            "hardware": hardware(dev), "dataset": dataset_name or str(dataset),
            "quality": int(quality or 0), "batch": batch, "crop": crop, "lr": lr, "aux_lr": aux_lr,
            "quantization": quantization, "stretch": stretch, "val": last_val,
            "lr_schedule": lr_segments(log.rows), "warm_start": public_lineage(lineage),
            "total_steps": total_steps, "total_wall_s": round(total_wall, 1)})
    return result


