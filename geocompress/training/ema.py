"""An exponential moving average of a run's weights, kept beside them, validated and exported.

Why: on two CPU cores a run trains with batches of eight at a learning rate that still moves it
forward, and Adam's steps leave the weights scattered around the path they follow: raising the
rate costs validation loss within a few hundred steps, lowering it gains some at once. The
average of the last ~``1 / (1 - decay)`` steps' weights sits nearer that path without slowing
the run (what it gave the variable-rate run: ``catalogs/models/mgssnet-vr.md``). The live
weights keep training; the average is what a run validates beside them and exports.

The update is :func:`torch.optim.swa_utils.get_ema_multi_avg_fn`'s (one fused ``lerp`` over
every parameter per step). Every floating-point parameter is averaged, frozen ones and the
entropy bottleneck's quantiles included (an export settles the quantiles from the averaged
density anyway); buffers (CDF tables) are rebuilt by every export.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn

__all__ = ["WeightAverage", "averaged_state", "averaged_meta"]


def _floating(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]


class WeightAverage:
    """The moving average of ``model``'s parameters, in float32 on the model's device.

    Args:
        model: the model being trained (its parameters are read, never replaced).
        decay: the weight of the old average at every update, in (0, 1): ``0.999`` averages
            over about the last 1,000 steps.
        state: a :meth:`state_dict` to resume (a resumed run's average); ``None`` starts from
            the model's present weights. A saved average keeps its values under a new ``decay``.

    Raises:
        ValueError: ``decay`` outside (0, 1), or a ``state`` whose parameters are not the
            model's (another architecture or width: averaging them would be meaningless).
    """

    def __init__(self, model: torch.nn.Module, decay: float,
                 state: dict[str, Any] | None = None) -> None:
        if not 0.0 < float(decay) < 1.0:
            raise ValueError(f"weight-average decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self._update = get_ema_multi_avg_fn(self.decay)
        named = _floating(model)
        self.names = [n for n, _ in named]
        self.live = [p for _, p in named]
        if state is None:
            self.avg = [p.detach().clone().float() for p in self.live]
            self.updates = 0
        else:
            saved = state["params"]
            if set(saved) != set(self.names) or any(saved[n].shape != p.shape for n, p in named):
                raise ValueError("the saved weight average does not match the model's parameters")
            self.avg = [saved[n].to(device=p.device, dtype=torch.float32).clone() for n, p in named]
            self.updates = int(state["updates"])

    @torch.no_grad()
    def update(self) -> None:
        """Fold the model's present weights into the average (after each optimizer step)."""
        self._update(self.avg, self.live, self.updates)
        self.updates += 1

    def summary(self) -> dict[str, Any]:
        """What a checkpoint's meta records of the average: ``decay`` and ``updates``."""
        return {"decay": self.decay, "updates": self.updates}

    def state_dict(self) -> dict[str, Any]:
        """What a training state stores: the :meth:`summary` and the averaged ``params`` (by
        name, on the CPU)."""
        return {**self.summary(), "params": {n: a.detach().cpu() for n, a in zip(self.names, self.avg)}}

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model carries the averaged weights inside the block (validation, export), its
        live ones again after it, also when the block raises."""
        with torch.no_grad():
            backup = [p.detach().clone() for p in self.live]
            for p, a in zip(self.live, self.avg):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.live, backup):
                    p.copy_(b)


def averaged_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A training state's model weights with its weight average in place of the live
    parameters (the state's own weights where it keeps no average).

    Args:
        state: a ``train_state.pt`` as loaded.

    Returns:
        A state dict for the state's model.
    """
    weights = dict(state["model"])
    ema = state.get("ema")
    if ema:
        for n, a in ema["params"].items():
            weights[n] = a.to(weights[n].dtype)
    return weights


def averaged_meta(state: dict[str, Any]) -> dict[str, Any] | None:
    """A training state's :meth:`WeightAverage.summary` (``None`` where it keeps no average).

    Args:
        state: a ``train_state.pt`` as loaded.

    Returns:
        ``decay`` and ``updates``, or ``None``.
    """
    ema = state.get("ema")
    return {k: v for k, v in ema.items() if k != "params"} if ema else None
