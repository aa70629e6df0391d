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

import contextlib
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

from .checkpoints import (EXPORT, LOG, STATE, export_checkpoint, lineage_totals, load_weights,
                          public_lineage, warm_optimizers)
from .config import TrainConfig
from .data import EpochSampler, open_tiles
from .ema import WeightAverage
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
    """The model's trainable parameters, split as CompressAI's ``configure_optimizers`` does.

    Why: the entropy bottleneck's ``quantiles`` minimise ``aux_loss`` with their own optimizer
    and learning rate; in the main optimizer the rate term would pull them instead.

    Args:
        model: a compression model.

    Returns:
        (main, aux): the parameters that require a gradient, ``*.quantiles`` in ``aux``.
    """
    main = [p for n, p in model.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return main, aux


def freeze_parameters(model: torch.nn.Module, prefixes: tuple[str, ...]) -> int:
    """Keep the parameters whose names start with one of ``prefixes`` fixed (no gradient, not in
    the optimizer).

    Why: a variable-rate model warm-started from a fixed-rate trunk whose transforms are at their
    capacity first learns its gains and entropy models around the trunk (as CompressAI's
    ``vbr`` post-training does), instead of pulling the trunk towards a compromise of every rate.

    Args:
        model: the model, frozen in place.
        prefixes: parameter-name prefixes (e.g. ``("g_a.", "g_s.")``).

    Returns:
        How many tensors were frozen.

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
    """Whether the model has grouped convolutions, whose CPU backward needs channels-last.

    Args:
        model: any module.

    Returns:
        True when some ``Conv2d`` has ``groups > 1``.
    """
    return any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())


def fused_adam(device: torch.device) -> bool:
    """Whether Adam runs its fused kernel on ``device``.

    Why: the fused kernel makes the same update as the per-parameter loop, several times faster
    on MGSSNet's CPU step (``catalogs/models/mgssnet-training.md``).

    Args:
        device: the training device.

    Returns:
        True on CPU and CUDA, where PyTorch has the kernel.
    """
    return device.type in ("cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """The device a run trains on.

    Args:
        device: ``"auto"`` (CUDA where available, else CPU) or a torch device name.

    Returns:
        The torch device.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def hardware(device: torch.device) -> str:
    """The hardware a run trained on, in words, for its state and checkpoint meta (a catalog
    compares training times only on like hardware).

    Args:
        device: the training device.

    Returns:
        The GPU's name, or the CPU's thread and core counts and processor.
    """
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    n = torch.get_num_threads()
    return (f"CPU, {n} torch thread{'s' if n != 1 else ''} on {os.cpu_count()} cores "
            f"({platform.machine()}, {platform.processor() or platform.system()})")


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: torch.utils.data.Dataset, lmbda: float, device: torch.device,
             batch: int = 8, channels_last: bool = False, quantization: str = "noise") -> dict[str, float]:
    """Mean loss, estimated bpp, MSE and PSNR (mean over tiles of the per-tile PSNR), in eval mode
    of the run's ``quantization`` (:mod:`.quantization`).

    Args:
        model: the model (left in the training mode it was in).
        data: tiles as [0, 1] tensors (e.g. the val split).
        lmbda: the loss's lambda; a variable-rate model uses each level's own instead.
        device: where to run.
        batch: tiles per forward pass.
        channels_last: feed channels-last batches (as the run trains).
        quantization: ``"noise"`` or ``"mixed"``, the run's own, so that validation losses
            measure what training optimises.

    Returns:
        ``loss``, ``bpp``, ``mse``, ``psnr``. A variable-rate model is measured at each of
        :func:`val_levels` with that level's lambda: the figures are the means over levels, and
        ``levels`` maps each level to its own.
    """
    if hasattr(model, "set_rate"):
        per = {}
        for q in val_levels(model):
            model.set_rate(float(q))
            per[q] = _evaluate(model, data, float(model.lambdas_at(q)), device, batch, channels_last,
                               quantization)
        out = {k: sum(v[k] for v in per.values()) / len(per) for k in ("loss", "bpp", "mse", "psnr")}
        return {**out, "levels": per}
    return _evaluate(model, data, lmbda, device, batch, channels_last, quantization)


def val_levels(model: torch.nn.Module) -> tuple[int, ...]:
    """The levels a variable-rate model is validated at: both ends and the middle (three points
    show the whole curve's movement at a third of the cost of every level), and, where the model
    has levels below or above :data:`~geocompress.models.variable_rate.LEVEL_LAMBDAS`, that
    table's first and last level (so that the curve of an extended model stays comparable with
    its earlier one).

    Args:
        model: a variable-rate model (with ``levels``, ``levels_below``).

    Returns:
        The levels, ascending: (0, middle, top), or (0, below, middle of the table, table's top,
        top) without repeats.
    """
    top, below = int(model.levels) - 1, int(getattr(model, "levels_below", 0))
    table_top = top - int(getattr(model, "levels_above", 0))
    return tuple(sorted({0, below, below + (table_top - below) // 2, table_top, top}))


def _evaluate(model: torch.nn.Module, data: torch.utils.data.Dataset, lmbda: float, device: torch.device,
              batch: int = 8, channels_last: bool = False, quantization: str = "noise") -> dict[str, float]:
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
          out_dir: str | os.PathLike, recipe: TrainConfig | None = None,
          **options: Any) -> TrainResult:
    """Train ``arch`` on the train split of a tile store, resumably, with the paper's recipe.

    Writes into ``out_dir``: ``train_state.pt`` (resumable), ``log.csv``, ``curves.png`` and, once
    finished, ``model.pt`` (fp16 inference checkpoint, ``model.update(force=True)`` first).
    The run is a short loop over named parts (:class:`_Run`): restore (state, warm start),
    step, validate, save.

    What each setting of the recipe does: :class:`.config.TrainConfig`.

    Args:
        arch: a registry architecture (:func:`geocompress.models.build`).
        config: its settings (e.g. ``{"N": 64, "M": 96}``); a resumed run keeps its own.
        dataset: a Zarr tile store, a ``.npz`` pack, or a list of them (``"PATH*K"`` repeats
            one K times in the train split; :func:`.data.open_tiles`).
        lmbda: the rate-distortion trade-off (CompressAI convention, :mod:`.loss`); unused by a
            variable-rate model, which trains each level at its own lambda (pass 0.0).
        out_dir: the run folder; created if missing.
        recipe: every other setting as one value; default the paper's recipe.
        **options: single fields of ``recipe`` to override (``train(..., steps=100, crop=128)``),
            so that a call can name only what differs.

    Returns:
        Where this call stopped and what it wrote (a :class:`TrainResult`).

    Raises:
        TypeError: an option that is no field of :class:`.config.TrainConfig`.
        ValueError: ``train_state.pt`` belongs to another architecture or lambda, an unknown
            ``quantization``, a ``freeze`` prefix that names no parameter, or a train split
            smaller than one batch.
        FloatingPointError: ``max_bad_steps`` non-finite steps in a row.
    """
    cfg = (recipe or TrainConfig()).replace(**options)
    t_call = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    run = _Run(arch, config, dataset, lmbda, out, cfg, t_call)
    from tqdm.auto import tqdm

    bar = tqdm(total=run.total, initial=run.step, disable=not cfg.progress, mininterval=10,
               desc=f"{arch} q{cfg.quality if cfg.quality is not None else '-'} lambda={lmbda:g}")
    last_ckpt = time.time()
    halted = False
    while run.step < run.total and not halted:
        epoch, pos = divmod(run.step, run.per_epoch)
        for x in run.loader(epoch, pos):
            p = run.train_step(x, epoch)
            bar.update(1)
            bar.set_postfix(loss=f"{p['loss']:.3f}", bpp=f"{p['bpp']:.3f}",
                            psnr=f"{p['psnr']:.2f}", refresh=False)
            done = run.step == run.total
            if run.step % run.cfg.val_every == 0 or done:
                run.validate(epoch)
            halted = run.should_halt()
            if halted or done or time.time() - last_ckpt >= cfg.checkpoint_every_s:
                run.save()
                last_ckpt = time.time()
            if halted or done or run.step % run.per_epoch == 0:
                break
    bar.close()
    return run.finish()


def _read_state(path: Path, arch: str, lmbda: float, resume: bool) -> dict[str, Any] | None:
    """The training state to resume, if any.

    Raises:
        ValueError: the state is a run of another architecture or lambda (resuming it would
            silently train something else).
    """
    if not (resume and path.exists()):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state["arch"] != arch or state["lmbda"] != float(lmbda):
        raise ValueError(f"{path} is a run of {state['arch']} at lambda {state['lmbda']}; "
                         f"asked for {arch} at {lmbda}: use another out_dir or resume=False")
    return state


def _own_modes(cfg: TrainConfig, state: dict[str, Any] | None) -> TrainConfig:
    """``cfg`` with ``quantization``, ``stretch`` and ``ema`` resolved: unset, a resumed run keeps
    its own.

    Raises:
        ValueError: an unknown quantization mode.
    """
    hparams = state["hparams"] if state is not None else {}
    quantization = cfg.quantization or hparams.get("quantization", "noise")
    stretch = hparams.get("stretch", 0.0) if cfg.stretch is None else cfg.stretch
    if quantization not in MODES:
        raise ValueError(f"unknown quantization {quantization!r}; choose one of {MODES}")
    ema = (hparams.get("ema") or 0.0) if cfg.ema is None else cfg.ema
    return cfg.replace(quantization=quantization, stretch=stretch, ema=float(ema))


def _build_model(arch: str, config: dict[str, Any] | None, cfg: TrainConfig,
                 state: dict[str, Any] | None, dev: torch.device,
                 amp: bool) -> tuple[torch.nn.Module, bool]:
    """The model of the run on ``dev``, in training mode, its weights from the state or the warm
    start (else the seed's initialisation), its ``freeze`` prefixes fixed; and whether it runs
    channels-last (``cfg.channels_last``, default: on CPU for models with depthwise convolutions).
    """
    torch.manual_seed(cfg.seed)
    model = build(arch, **(config or {}))
    if state is not None:
        model.load_state_dict(restore_constants(model, state["model"]))
    elif cfg.warm_start is not None:
        load_weights(model, cfg.warm_start)
    model = model.to(dev)
    channels_last = cfg.channels_last
    if channels_last is None:
        channels_last = dev.type == "cpu" and has_depthwise(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prepare_layers(model, dev.type, amp=amp)
    model.train()
    freeze_parameters(model, cfg.freeze)
    return model, bool(channels_last)


class _Run:
    """One call of :func:`train` while it runs: the model, its optimizers and data, and where it
    stands (step, wall time, best validation loss, lineage, warm-up ramp).

    Its parts are the trainer's steps: :meth:`_restore` (state or warm start), :meth:`train_step`,
    :meth:`validate`, :meth:`save` and :meth:`finish`; ``cfg`` is the recipe with every default
    resolved (quantization, stretch, channels-last, validation interval), read directly.
    """

    def __init__(self, arch: str, config: dict[str, Any] | None, dataset: str | os.PathLike,
                 lmbda: float, out: Path, cfg: TrainConfig, t_call: float) -> None:
        self.arch, self.dataset, self.lmbda, self.out, self.t_call = arch, dataset, lmbda, out, t_call
        self.dev = resolve_device(cfg.device)
        self.amp_dtype = autocast_dtype(cfg.precision, self.dev)
        self.state_path = out / STATE
        state = _read_state(self.state_path, arch, lmbda, cfg.resume)
        run_quant = state["hparams"].get("quantization", "noise") if state is not None else "noise"
        cfg = _own_modes(cfg, state)
        self.model, channels_last = _build_model(arch, state["config"] if state is not None else config,
                                                 cfg, state, self.dev, self.amp_dtype is not None)
        self.config = dict(self.model.config)
        self.main_p, aux_p = split_parameters(self.model)
        self.opt = torch.optim.Adam(self.main_p, lr=cfg.lr, fused=fused_adam(self.dev))
        self.aux_opt = torch.optim.Adam(aux_p, lr=cfg.aux_lr, fused=fused_adam(self.dev)) if aux_p else None
        self.cfg = cfg.replace(channels_last=channels_last)
        self.boost = self._boosted()
        saved = state.get("ema") if state is not None else None
        self.ema = WeightAverage(self.model, cfg.ema, saved) if cfg.ema else None
        self.sched = self._new_scheduler()
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=self.amp_dtype == torch.float16)
        self.crit = RateDistortionLoss(lmbda, balance=self.cfg.level_balance)
        self._open_data()
        self._restore(state, run_quant)
        self.log = RunLog(out / LOG, self.step if state is not None else None)
        self.title = f"{arch} {self.config} lambda={lmbda} crop={cfg.crop} batch={cfg.batch}"
        self.losses: list[float] = []
        self.bad = 0
        self.last_val: dict[str, float] | None = None

    def _new_scheduler(self) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, "min", factor=self.cfg.plateau_factor, patience=self.cfg.plateau_patience,
            min_lr=self.cfg.min_lr)

    def _open_data(self) -> None:
        """The train and val splits, the epoch length, the run's length and its sampler."""
        cfg = self.cfg
        self.train_ds = open_tiles(self.dataset, "train", crop=cfg.crop, augment=True, stretch=cfg.stretch)
        self.val_ds = open_tiles(self.dataset, "val", crop=cfg.val_crop, augment=False, limit=cfg.val_limit)
        self.per_epoch = len(self.train_ds) // cfg.batch
        if self.per_epoch == 0:
            raise ValueError(f"train split has {len(self.train_ds)} tiles, fewer than a batch of {cfg.batch}")
        self.total = int(cfg.steps) if cfg.steps is not None else int(cfg.epochs or 1) * self.per_epoch
        self.cfg = cfg.replace(val_every=int(cfg.val_every or self.per_epoch))
        self.sampler = EpochSampler(len(self.train_ds), cfg.seed)

    def _restore(self, state: dict[str, Any] | None, run_quant: str) -> None:
        """Where the run stands: from the state (optimizers, scheduler, scaler, RNG, counters),
        else from a warm start's lineage and Adam moments (or a warm-up ramp without them)."""
        cfg = self.cfg
        self.step, self.wall0, self.best = 0, 0.0, math.inf
        self.lineage = state["hparams"].get("warm_start") if state is not None else None
        self.warmup = state["hparams"].get("warmup") if state is not None else None
        if state is None and cfg.warm_start is not None:
            self.lineage, moments = warm_optimizers(cfg.warm_start, self.opt, self.aux_opt, cfg.lr, cfg.aux_lr)
            if not moments and cfg.warmup_steps > 0:
                self.warmup = {"steps": int(cfg.warmup_steps), "lr": float(cfg.lr)}
        if state is not None:
            self.opt.load_state_dict(state["opt"])
            if self.aux_opt is not None:
                self.aux_opt.load_state_dict(state["aux_opt"])
            self.sched.load_state_dict(state["sched"])
            self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"]["torch"])
            if self.dev.type == "cuda" and state["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(state["rng"]["cuda"], self.dev)
            self.step, self.wall0, self.best = state["step"], state["wall_s"], state["best_val"]
            if cfg.quantization != run_quant:  # losses of two modes are not comparable
                self.sched = self._new_scheduler()
                self.best = math.inf
        for o in (self.opt, self.aux_opt):  # a loaded optimizer state brings its own 'fused' flag
            for g in (o.param_groups if o is not None else []):
                g["fused"], g["foreach"] = fused_adam(self.dev), None
        if cfg.lr_override is not None:
            for g in self.opt.param_groups:
                g["lr"] = float(cfg.lr_override)
            if self.warmup is not None:
                self.warmup = {**self.warmup, "lr": float(cfg.lr_override)}

    def wall(self) -> float:
        """Training time of the run so far: the resumed state's plus this call's."""
        return self.wall0 + time.time() - self.t_call

    def loader(self, epoch: int, pos: int) -> DataLoader:
        """The batches of ``epoch`` from batch ``pos`` on (a resumed run continues mid-epoch)."""
        self.sampler.set_epoch(epoch, pos * self.cfg.batch)
        # own generator: a DataLoader iterator draws a base seed from the global torch RNG,
        # which would shift the quantization noise of a resumed run
        return DataLoader(self.train_ds, batch_size=self.cfg.batch, sampler=self.sampler,
                          drop_last=True, generator=torch.Generator().manual_seed(self.cfg.seed))

    def train_step(self, x: torch.Tensor, epoch: int) -> dict[str, float]:
        """One optimizer step on batch ``x`` (and one of the auxiliary optimizer), logged.

        Returns:
            The step's loss, bpp, MSE and PSNR.

        Raises:
            FloatingPointError: ``max_bad_steps`` non-finite losses or gradients in a row.
        """
        cfg, model, opt = self.cfg, self.model, self.opt
        x = x.to(self.dev, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.warmup is not None and self.step < self.warmup["steps"]:
            for g in opt.param_groups:
                g["lr"] = self.warmup["lr"] * (self.step + 1) / self.warmup["steps"]
        opt.zero_grad(set_to_none=True)
        if hasattr(model, "set_rate"):  # stratified levels: every batch spans the whole rate range
            levels = (torch.arange(len(x)) + torch.rand(len(x))) * ((model.levels - 1) / len(x))
            model.set_rate(levels)
            self.crit.per_sample(model.lambdas_at(levels), levels)
        with torch.autocast(device_type=self.dev.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            result = forward(model, x, cfg.quantization)
        parts = self.crit(result, x)
        objective = parts.pop("objective", parts["loss"])  # the level-balanced loss, if any
        self.scaler.scale(objective).backward()
        self.scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(self.main_p, cfg.clip if cfg.clip else math.inf)
        self._apply(bool(torch.isfinite(parts["loss"]) and torch.isfinite(norm)))
        aux = self._aux_step()
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        p = {k: float(v.detach()) for k, v in parts.items()}
        self.losses.append(p["loss"])
        self.log.write({"step": self.step, "epoch": epoch, "phase": "train", **p, "aux_loss": aux,
                        "lr": opt.param_groups[0]["lr"], "wall_s": round(self.wall(), 1)})
        return p

    def _apply(self, finite: bool) -> None:
        """The main update, skipped for a non-finite loss or gradient: one bad batch must not
        poison the weights (but ``max_bad_steps`` in a row end the run)."""
        if finite:
            boost = self.boost if self.step < self.cfg.lr_multipliers_until else []
            before = [p.detach().clone() for p, _ in boost]
            self.scaler.step(self.opt)
            with torch.no_grad():
                for (p, k), b in zip(boost, before):  # entry-wise learning rates: the update scaled
                    p.copy_(torch.where(k == 1, p, b + (p - b) * k))
            self.bad = 0
        else:
            self.bad += 1
            if self.bad >= self.cfg.max_bad_steps:
                raise FloatingPointError(
                    f"{self.bad} consecutive non-finite losses / gradients at step {self.step}: lower "
                    f"the learning rate or resume from {self.state_path} with another seed")
        self.scaler.update()

    def _boosted(self) -> list[tuple[torch.nn.Parameter, torch.Tensor]]:
        """The trainable parameters with entry-wise learning-rate factors (``cfg.lr_multipliers``)
        and their factors on the model's device, resolved once for every step.

        Raises:
            ValueError: a name in ``cfg.lr_multipliers`` that is no parameter of the model.
        """
        mult = self.cfg.lr_multipliers or {}
        named = dict(self.model.named_parameters())
        unknown = set(mult) - set(named)
        if unknown:
            raise ValueError(f"lr_multipliers: no parameter named {sorted(unknown)}")
        return [(named[n], k.to(named[n].device)) for n, k in mult.items() if named[n].requires_grad]

    def _aux_step(self) -> float:
        """One step of the entropy bottleneck's quantiles on ``aux_loss``; returns that loss."""
        if self.aux_opt is None:
            return 0.0
        self.aux_opt.zero_grad(set_to_none=True)
        aux_loss = self.model.aux_loss()
        aux_loss.backward()
        self.aux_opt.step()
        return float(aux_loss.detach())

    def validate(self, epoch: int) -> None:
        """Validate, step the plateau scheduler, log (``val@qN`` rows per level of a
        variable-rate model, then ``val``; the same as ``ema@qN`` / ``ema`` for the weight
        average, if the run keeps one) and redraw the curves. The scheduler follows the live
        weights: they are what the learning rate moves."""
        cfg = self.cfg
        self.last_val = evaluate(self.model, self.val_ds, self.lmbda, self.dev, cfg.batch,
                                 cfg.channels_last, cfg.quantization)
        self.sched.step(self.last_val["loss"])
        self.best = min(self.best, self.last_val["loss"])
        for q, v in self.last_val.pop("levels", {}).items():
            self._log_val(epoch, f"val@q{q}", v)
        self._log_val(epoch, "val", self.last_val)
        if self.ema is not None:
            with self.ema.applied():
                averaged = evaluate(self.model, self.val_ds, self.lmbda, self.dev, cfg.batch,
                                    cfg.channels_last, cfg.quantization)
            for q, v in averaged.pop("levels", {}).items():
                self._log_val(epoch, f"ema@q{q}", v)
            self._log_val(epoch, "ema", averaged)
        plot_log(self.log.rows, self.out / PLOT, self.title)

    def _log_val(self, epoch: int, phase: str, figures: dict[str, float]) -> None:
        self.log.write({"step": self.step, "epoch": epoch, "phase": phase, **figures,
                        "lr": self.opt.param_groups[0]["lr"], "wall_s": round(self.wall(), 1)})

    def should_halt(self) -> bool:
        """Whether this call has used its ``halt_after`` steps or its ``time_budget_s``."""
        cfg = self.cfg
        return (cfg.halt_after is not None and len(self.losses) >= cfg.halt_after) or \
            (cfg.time_budget_s is not None and time.time() - self.t_call >= cfg.time_budget_s)

    def save(self) -> None:
        """Write ``train_state.pt`` atomically: everything an exact resume needs."""
        cfg, dev = self.cfg, self.dev
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}
        atomic_save({"arch": self.arch, "config": self.config, "lmbda": float(self.lmbda),
                     "step": self.step, "total_steps": self.total,
                     "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                     "opt": self.opt.state_dict(),
                     "aux_opt": self.aux_opt.state_dict() if self.aux_opt else None,
                     "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(), "rng": rng,
                     "ema": self.ema.state_dict() if self.ema is not None else None,
                     "wall_s": self.wall(), "best_val": self.best, "quality": cfg.quality,
                     "hparams": {"batch": cfg.batch, "crop": cfg.crop, "lr": cfg.lr, "aux_lr": cfg.aux_lr,
                                 "seed": cfg.seed, "dataset": str(self.dataset),
                                 "dataset_name": cfg.dataset_name, "hardware": hardware(dev),
                                 "warm_start": self.lineage, "quantization": cfg.quantization,
                                 "warmup": self.warmup, "stretch": cfg.stretch,
                                 "freeze": list(cfg.freeze), "level_balance": cfg.level_balance,
                                 "lr_multipliers": sorted(cfg.lr_multipliers or {}),
                                 "lr_multipliers_until": cfg.lr_multipliers_until, "ema": cfg.ema}},
                    self.state_path)

    def finish(self) -> TrainResult:
        """Redraw the curves; once the run is finished (and ``export``), write ``model.pt``."""
        cfg = self.cfg
        plot_log(self.log.rows, self.out / PLOT, self.title)
        result = TrainResult(self.step, self.total, self.step >= self.total, self.losses,
                             self.last_val, self.state_path)
        if result.finished and cfg.export:  # the weight average, where the run keeps one
            result.checkpoint = self.out / EXPORT
            total_steps, total_wall = lineage_totals(self.step, self.wall(), self.lineage)
            with self.ema.applied() if self.ema is not None else contextlib.nullcontext():
                result.digest = self._export(result.checkpoint, total_steps, total_wall)
        return result

    def _export(self, path: Path, total_steps: int, total_wall: float) -> str:
        cfg = self.cfg
        return export_checkpoint(self.model, path, {
            "lambda": float(self.lmbda), "steps": self.step, "wall_s": round(self.wall(), 1),
            "hardware": hardware(self.dev), "dataset": cfg.dataset_name or str(self.dataset),
            "quality": int(cfg.quality or 0), "batch": cfg.batch, "crop": cfg.crop,
            "lr": cfg.lr, "aux_lr": cfg.aux_lr, "quantization": cfg.quantization,
            "stretch": cfg.stretch, "val": self.last_val,
            "lr_schedule": lr_segments(self.log.rows), "warm_start": public_lineage(self.lineage),
            "total_steps": total_steps, "total_wall_s": round(total_wall, 1),
            "ema": self.ema.summary() if self.ema is not None else None})
