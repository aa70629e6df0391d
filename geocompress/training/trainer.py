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

from geocompress.codec import restore_constants, save_checkpoint
from geocompress.models import build

from .data import EpochSampler, open_tiles
from .lr_history import inherited, lr_segments, read_lr_segments
from .loss import RateDistortionLoss
from .mixed_precision import _float32_layers, autocast_dtype
from .quantization import MODES, forward
from .run_log import _Log, plot_log

STATE = "train_state.pt"
EXPORT = "model.pt"
LOG = "log.csv"
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


def has_depthwise(model: torch.nn.Module) -> bool:
    """Whether the model has grouped convolutions, whose CPU backward needs channels-last."""
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


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


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Weights of a training state or an inference checkpoint (same architecture and config)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    sd = ckpt["model"] if "model" in ckpt else ckpt["state_dict"]
    model.load_state_dict(restore_constants(model, {k: v.float() if v.is_floating_point() else v
                                                    for k, v in sd.items()}))


def _totals(steps: int, wall_s: float, lineage: dict[str, Any] | None) -> tuple[int, float]:
    """A run's own steps and wall time plus those of the weights it started from."""
    lineage = lineage or {}
    return steps + (lineage.get("steps") or 0), wall_s + (lineage.get("wall_s") or 0)


def _public_lineage(lineage: dict[str, Any] | None) -> dict[str, Any] | None:
    """A lineage for a shipped checkpoint's meta: the parent named by its run or file, not by a
    path on the machine that trained it."""
    if not lineage:
        return None
    path = Path(lineage["path"])
    return {**lineage, "path": path.parent.name if path.name == STATE else path.name}


def _warm_optimizers(path: str | os.PathLike, opt: torch.optim.Optimizer,
                     aux_opt: torch.optim.Optimizer | None, lr: float,
                     aux_lr: float) -> tuple[dict[str, Any], bool]:
    """Adam moments of a training state used as warm start (not for inference checkpoints).

    A fresh Adam after a warm start takes full-size steps with no second-moment history: the
    loss jumps (measured on MGSSNet N=64: mean loss 59 over the first 20 steps vs 23 with the
    moments carried over). The learning rates stay this run's own. Returns the run's lineage
    (where its weights came from, after how many steps and how much training time, and the lr
    those steps ran at as far as recorded) for catalogs, and whether Adam moments were found (an
    inference checkpoint has none)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    meta = ckpt.get("meta", {})
    if "step" in ckpt:  # a training state: its own steps plus what it inherited
        parent = (ckpt.get("hparams") or {}).get("warm_start")
        steps, wall = _totals(ckpt["step"], ckpt["wall_s"], parent)
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
def evaluate(model: torch.nn.Module, data: torch.utils.data.Dataset, lmbda: float, device: torch.device,
             batch: int = 8, channels_last: bool = False, quantization: str = "noise") -> dict[str, float]:
    """Mean loss, estimated bpp, MSE and PSNR (mean over tiles of the per-tile PSNR), in eval mode
    of the run's ``quantization`` (:mod:`.quantization`)."""
    was = model.training
    model.eval()
    crit = RateDistortionLoss(lmbda)
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
          out_dir: str | os.PathLike, steps: int | None = None, epochs: int | None = None,
          batch: int = 8, crop: int = 256, lr: float = 1e-4, aux_lr: float = 1e-3,
          resume: bool = True, device: str = "auto", warm_start: str | os.PathLike | None = None,
          seed: int = 0, val_every: int | None = None, val_limit: int | None = None,
          val_crop: int | None = None, checkpoint_every_s: float = 240.0, clip: float = 1.0,
          plateau_patience: int = 5, plateau_factor: float = 0.5, min_lr: float = 1e-6,
          precision: str = "auto", threads: int | None = None, halt_after: int | None = None,
          time_budget_s: float | None = None, progress: bool = True, quality: int | None = None,
          dataset_name: str | None = None, export: bool = True,
          channels_last: bool | None = None, max_bad_steps: int = 25,
          lr_override: float | None = None, quantization: str | None = None,
          warmup_steps: int = 200, stretch: float | None = None) -> TrainResult:
    """Train ``arch`` (with ``config``) on the train split of a tile store for ``steps`` optimizer
    steps (or ``epochs`` passes) at ``lmbda`` (CompressAI convention, see :mod:`.loss`).

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
    if use_amp:
        _float32_layers(model, dev.type)
    model.train()

    main_p, aux_p = split_parameters(model)
    opt = torch.optim.Adam(main_p, lr=lr)
    aux_opt = torch.optim.Adam(aux_p, lr=aux_lr) if aux_p else None
    def new_scheduler() -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min", factor=plateau_factor,
                                                          patience=plateau_patience, min_lr=min_lr)

    sched = new_scheduler()
    scaler = torch.amp.GradScaler(dev.type, enabled=use_amp and amp_dtype == torch.float16)
    crit = RateDistortionLoss(lmbda)

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
        lineage, moments = _warm_optimizers(warm_start, opt, aux_opt, lr, aux_lr)
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
    if lr_override is not None:
        for g in opt.param_groups:
            g["lr"] = float(lr_override)
        if warmup is not None:
            warmup = {**warmup, "lr": float(lr_override)}
    log = _Log(out / LOG, step if state is not None else None)
    title = f"{arch} {config} lambda={lmbda} crop={crop} batch={batch}"

    def wall() -> float:
        return wall0 + time.time() - t_call

    def save_state() -> None:
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        _atomic_save({"arch": arch, "config": config, "lmbda": float(lmbda), "step": step,
                      "total_steps": total, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                      "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict() if aux_opt else None,
                      "sched": sched.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                      "wall_s": wall(), "best_val": best, "quality": quality,
                      "hparams": {"batch": batch, "crop": crop, "lr": lr, "aux_lr": aux_lr,
                                  "seed": seed, "dataset": str(dataset),
                                  "dataset_name": dataset_name, "hardware": hardware(dev),
                                  "warm_start": lineage, "quantization": quantization,
                                  "warmup": warmup, "stretch": stretch}},
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
        total_steps, total_wall = _totals(step, wall(), lineage)
        result.digest = export_checkpoint(model, result.checkpoint, {
            "lambda": float(lmbda), "steps": step, "wall_s": round(wall(), 1),
            "hardware": hardware(dev), "dataset": dataset_name or str(dataset),
            "quality": int(quality or 0), "batch": batch, "crop": crop, "lr": lr, "aux_lr": aux_lr,
            "quantization": quantization, "stretch": stretch, "val": last_val,
            "lr_schedule": lr_segments(log.rows), "warm_start": _public_lineage(lineage),
            "total_steps": total_steps, "total_wall_s": round(total_wall, 1)})
    return result


@torch.no_grad()
def settle_quantiles(model: torch.nn.Module, iters: int = 64) -> float:
    """Set the entropy bottleneck's quantiles to where its learned density puts them; returns the
    aux loss after (0 up to float rounding).

    The quantiles bound the CDF tables that ``update()`` builds. During a short training run the
    auxiliary optimizer (lr 1e-3) trails the density that the main optimizer keeps sharpening
    (measured: aux loss 4000 after 4400 MGSSNet steps), and tables built from stale quantiles are
    too narrow (symbols escape to costly bypass coding) or too wide. The cumulative density is
    monotone by construction, so each quantile is found exactly by bisection instead."""
    from compressai.entropy_models import EntropyBottleneck

    for eb in (m for m in model.modules() if isinstance(m, EntropyBottleneck)):
        q = eb.quantiles
        target = eb.target.to(q).view(1, 1, -1).expand_as(q)

        def f(x: torch.Tensor, eb: EntropyBottleneck = eb) -> torch.Tensor:
            return eb._logits_cumulative(x, stop_gradient=True)

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
    (lambda, steps, wall time, hardware, data, recipe, lineage); returns (digest, meta, model)."""
    from .lambdas import compressai_to_paper

    state = torch.load(state_path, map_location="cpu", weights_only=False)
    model = build(state["arch"], **state["config"])
    model.load_state_dict(restore_constants(model, state["model"]))
    hp = state["hparams"]
    lineage = _public_lineage(hp.get("warm_start"))
    meta = {"lambda": state["lmbda"], "lambda_scale": "compressai: bpp + lambda * 255^2 * MSE",
            "lambda_paper_scale": compressai_to_paper(state["lmbda"]), "steps": state["step"],
            "wall_s": round(state["wall_s"], 1), "hardware": hp["hardware"],
            "dataset": hp.get("dataset_name") or hp["dataset"], "quality": int(quality),
            "batch": hp["batch"], "crop": hp["crop"], "lr": hp["lr"], "aux_lr": hp["aux_lr"],
            "best_val_loss": state["best_val"], "warm_start": lineage,
            "quantization": hp.get("quantization", "noise"), "stretch": hp.get("stretch", 0.0),
            "lr_schedule": read_lr_segments(Path(state_path).parent / LOG)}
    meta["total_steps"], total_wall = _totals(state["step"], state["wall_s"], lineage)
    meta["total_wall_s"] = round(total_wall, 1)
    digest = export_checkpoint(model, Path(out), meta)
    return digest, load_meta(Path(out)), model


def load_meta(path: Path) -> dict[str, Any]:
    return dict(torch.load(path, map_location="cpu", weights_only=False).get("meta", {}))


def export_checkpoint(model: torch.nn.Module, path: Path, meta: dict[str, Any]) -> str:
    """fp16 inference checkpoint (quantiles settled, CDF tables from ``update(force=True)``);
    returns its digest."""
    model = model.to("cpu").to(memory_format=torch.contiguous_format).float().eval()
    meta = {"arch": model.arch, "config": dict(model.config), **meta,
            "aux_loss": round(settle_quantiles(model), 6)}
    return save_checkpoint(model, path, meta=meta, half=True)
