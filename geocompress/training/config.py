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
    """How long, on what, how: see :func:`.trainer.train` for what each field does."""

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
        """A copy with ``changes``; an unknown name is an error that lists the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return dataclasses.replace(self, **changes)
