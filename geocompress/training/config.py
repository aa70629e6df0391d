"""The recipe of one training run as one value: what :func:`.trainer.train` needs besides the
model, the data, lambda and the output folder. Defaults are the paper's recipe (III-C) in
CompressAI's form; ``catalogs/models/mgssnet-training.md`` records which values produced what."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    """How long, on what, how: every setting of :func:`.trainer.train` besides the model, the
    data, lambda and the output folder, as one frozen value (defaults: the paper's recipe).

    Why one value: a recipe is written once (a pipeline, a catalog entry) and varied a field at a
    time (``recipe.replace(steps=100)`` or ``train(..., steps=100)``), instead of threading 35
    arguments through every caller.

    What the fields do: ``steps`` optimizer steps (or ``epochs`` passes). ``resume`` continues
    from ``train_state.pt`` if present; ``warm_start`` initialises a new run from another run's
    weights (e.g. a lower lambda from a higher-rate quality) and, from a training state, its Adam
    moments. ``halt_after`` (steps) and ``time_budget_s`` (seconds) end this call early with the
    state saved, to be resumed later. Validation on the val split (``val_limit`` tiles, centre
    ``val_crop``, default the full tile) runs every ``val_every`` steps (default: every epoch)
    and drives the plateau scheduler. ``lr_override`` sets the main learning rate of a resumed
    or warm-started run (a final low-rate phase: the plateau scheduler rarely fires in a short
    run). A step whose loss or gradient is not finite is skipped (counted in the log as a
    non-finite loss); ``max_bad_steps`` of them in a row stop the run with an error.
    ``quantization`` (``noise``, CompressAI's, or ``mixed``: :mod:`.quantization`) defaults to
    the resumed run's own, else ``noise``; switching a resumed run restarts its plateau scheduler
    (validation losses of the two modes are not comparable). A run warm-started from weights
    without Adam moments (an inference checkpoint such as the shipped weights) ramps its lr
    linearly over its first ``warmup_steps``: a fresh Adam's first steps move every parameter by
    about the full lr whatever its gradient's noise, which undoes part of what the weights had
    learned. ``stretch`` is the probability that a training crop is re-stretched band by band
    (:func:`.tiles.restretch`: false-colour and stretched composites); default: the resumed
    run's own, else 0. ``freeze`` keeps parameters whose names start with one of its prefixes
    fixed (:func:`.trainer.freeze_parameters`). ``level_balance`` (a variable-rate model) weighs
    each level's share of the shared parameters (:class:`.loss.RateDistortionLoss`).
    ``lr_multipliers`` (parameter name -> a tensor of its shape) multiplies each entry's update by
    its factor until the run's own step ``lr_multipliers_until``: entries a widening added learn
    faster than the trained ones around them. ``ema`` keeps a moving average of the weights with
    that decay (:mod:`.ema`), validated beside the live weights (``ema`` rows in the log) and
    exported in their place; unset, a resumed run keeps its own, a new run has none.
    ``precision``, ``channels_last``: see :mod:`.trainer`.
    """

    # length: ``steps`` optimizer steps, else ``epochs`` passes over the train split (default 1)
    steps: int | None = None
    epochs: int | None = None
    halt_after: int | None = None          # end this call after so many steps (state saved)
    time_budget_s: float | None = None     # ... or after so many seconds
    # data
    batch: int = 8
    crop: int = 256
    stretch: float | None = None           # probability of a false-colour re-stretch (None: the run's own, else 0)
    seed: int = 0
    dataset_name: str | None = None
    # optimization
    lr: float = 1e-4
    aux_lr: float = 1e-3
    clip: float = 1.0
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    lr_override: float | None = None       # set the lr of a resumed / warm-started run
    warmup_steps: int = 200                # lr ramp after a warm start without Adam moments
    freeze: tuple[str, ...] = ()           # parameter-name prefixes kept fixed (e.g. "g_a.", "g_s.")
    quantization: str | None = None        # "noise" / "mixed" (None: the run's own, else noise)
    level_balance: float = 0.0             # variable-rate: weight each level's loss by its mean ** -p (loss.RateDistortionLoss)
    lr_multipliers: dict | None = None     # parameter name -> per-entry factor on its update
    lr_multipliers_until: int = 0          # ... applied while the run's own step is below this
    ema: float | None = None               # weight-average decay (None: the resumed run's own, else none; 0: none)
    max_bad_steps: int = 25
    # lineage and resume
    resume: bool = True
    warm_start: str | os.PathLike | None = None
    # validation and bookkeeping
    val_every: int | None = None
    val_limit: int | None = None
    val_crop: int | None = None
    checkpoint_every_s: float = 240.0
    quality: int | None = None
    export: bool = True
    progress: bool = True
    # hardware
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    channels_last: bool | None = None

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed.

        Args:
            **changes: field names and their new values.

        Returns:
            A new :class:`TrainConfig`; this one is frozen and stays as it was.

        Raises:
            TypeError: a name that is no field, listing the known ones (a misspelt option must
                not be silently ignored by a run of hours).
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)
