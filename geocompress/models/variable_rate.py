"""Variable-rate MGSSNet: one set of transforms and entropy models for every rate, by gain units.

Gain units (Cui et al., CVPR 2021, "Asymmetric Gained Deep Image Compression With Continuous Rate
Adaptation"): the analysis transform's latent is scaled channel by channel by a gain vector
``g_q`` before quantization and the decoded latent by an inverse gain ``g'_q`` before synthesis:

    y = g_a(x) * g_q        y_hat = Q(y)        x_hat = g_s(y_hat * g'_q)

A larger gain means a finer effective quantization step, so more bits and less distortion. One
pair of vectors per *level* ``l = 0 .. L-1`` is learned, each trained at its own lambda
(:data:`LEVEL_LAMBDAS`, CompressAI's zoo table extended by one level below and above); between
two levels the vectors are interpolated exponentially, ``g = g_l ** (1 - t) * g_(l+1) ** t``, which
gives a continuous rate. Training draws a continuous level per sample and the lambda at that level
(:func:`lambda_at`, log-linear between the table's values), so the interpolated gains are trained,
not only the integer ones.

The hyper latent is not gained (as QVRF, Tong et al. 2023, gains only ``y``): the hyper encoder
sees the gained ``y`` and learns each rate's scales from it, and the networks that choose the
entropy coder's distributions (``h_s``, context model, entropy parameters) stay exactly those of
the fixed-rate codec, so they keep running in exact fixed point and strings decode bit-exactly
across machines at every rate.

The level is the model's *rate state* (:meth:`MGSSNetVR.set_rate`): ``g_a`` multiplies its output
by the current gain and ``g_s`` its input by the current inverse gain, so every caller of
``model.g_a`` / ``model.g_s`` (the codec, halo coding, refinement, the trainer's quantization
modes) codes at the rate last set, per sample when a vector of levels is given. Parameter names of
the trunk are those of :class:`.mgssnet.MGSSNet`, so fixed-rate weights warm-start it directly.

The quality scale: quality ``q`` is level ``q``, and in a model without levels below, level ``l``
is trained at CompressAI's lambda of its quality ``l`` (level 0 at half of quality 1's). The scale
is each model's own: a level names a trade-off only with the weights' ``level_lambdas`` (the run in
progress has three levels below, so its level 3 is that level 0), and a store records the level
with the digest of the weights it was coded with. A model with ``levels_below = k`` reaches lower
rates with ``k`` more levels of :data:`BELOW_LAMBDAS` at the bottom of its scale, which then starts
there (its levels stay ``0 .. levels - 1``, a header's rate field never negative): its level
``l + k`` is the trade-off of the others' level ``l``; a model with more levels than ``k`` plus
:data:`LEVEL_LAMBDAS` reaches higher rates with levels of :data:`ABOVE_LAMBDAS` at the top of its
scale. :attr:`MGSSNetVR.level_lambdas` says which lambda each level has.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..codec.decoding import check_level
from .mgssnet import MGSSNet

# lambda (CompressAI convention, bpp + lambda * 255**2 * MSE) of each level; levels 1..8 are
# CompressAI's zoo qualities 1..8, level 0 one halving below
LEVEL_LAMBDAS: tuple[float, ...] = (0.0009, 0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483,
                                    0.0932, 0.1800)
# levels a model may hold below those, one halving each (quick looks under 0.05 bpp): a model
# with ``levels_below = k`` starts its scale at the last k of these, so its level k is the table's
# level 0
BELOW_LAMBDAS: tuple[float, ...] = (0.0001125, 0.000225, 0.00045)
# levels a model may hold above those, one doubling each (archives and analysis at 1-2 bpp): a
# model with more than ``levels_below + len(LEVEL_LAMBDAS)`` levels ends its scale here
ABOVE_LAMBDAS: tuple[float, ...] = (0.36, 0.72)
# the fixed-rate weights a run warm-starts from were trained at this level's lambda
REFERENCE_LEVEL = 6


def scale_lambdas(levels: int, levels_below: int = 0) -> tuple[float, ...]:
    """The lambda of each integer level of a scale of ``levels`` levels, ``levels_below`` of them
    below :data:`LEVEL_LAMBDAS`'s level 0 (the last of :data:`BELOW_LAMBDAS`) and any beyond
    :data:`LEVEL_LAMBDAS`'s top at those of :data:`ABOVE_LAMBDAS`.

    Args:
        levels: how many levels the scale has.
        levels_below: how many of them lie below ``LEVEL_LAMBDAS``'s level 0.

    Returns:
        One lambda per level, ascending.
    """
    return (BELOW_LAMBDAS[len(BELOW_LAMBDAS) - int(levels_below):] + LEVEL_LAMBDAS + ABOVE_LAMBDAS)[:int(levels)]


def lambda_at(level: Tensor | float, lambdas: tuple[float, ...] = LEVEL_LAMBDAS) -> Tensor:
    """The training lambda at a continuous ``level`` (log-linear between the table's values).

    Args:
        level: a level in ``[0, len(lambdas) - 1]``, or a tensor of them (one per sample).
        lambdas: the lambda of each integer level.

    Returns:
        A float32 tensor of ``level``'s shape.
    """
    level = torch.as_tensor(level, dtype=torch.float32)
    logs = torch.log(torch.tensor(lambdas, dtype=torch.float32, device=level.device))
    lo = level.floor().clamp(0, len(lambdas) - 2).long()
    t = level - lo
    return torch.exp(logs[lo] * (1 - t) + logs[lo + 1] * t)


class _RateState:
    """The rate last set (levels, one per sample or one for all) and the model whose gain tables
    turn it into vectors; shared by the gained transforms, not a module (no parameters of its
    own). The vectors are computed at each forward pass, so gradients reach the gain tables."""

    def __init__(self, owner: "MGSSNetVR") -> None:
        self.owner = owner
        self.level: Tensor | None = None


class _Gained(nn.Sequential):
    """A transform whose output (``side="out"``: the gain) or input (``side="in"``: the inverse
    gain) is scaled channel by channel at the model's current rate; its layers and parameter
    names are those of a plain ``Sequential``."""

    def __init__(self, layers: nn.Sequential, state: _RateState, side: str) -> None:
        super().__init__(*layers)
        object.__setattr__(self, "_rate", state)  # not a submodule: no parameters of its own
        object.__setattr__(self, "_side", side)

    def _scale(self, x: Tensor) -> Tensor:
        level = self._rate.level
        if level is None:
            raise RuntimeError("variable-rate model used before set_rate(): choose a rate first")
        if level.shape[0] not in (1, x.shape[0]):
            raise RuntimeError(f"rate set for {level.shape[0]} samples, transform got {x.shape[0]}")
        v = self._rate.owner.gain_vectors(level, inverse=self._side == "in")
        return x * v.to(device=x.device, dtype=torch.promote_types(x.dtype, v.dtype))

    def forward(self, x: Tensor) -> Tensor:  # noqa: D401 - nn.Module API
        if self._side == "in":
            return super().forward(self._scale(x))
        return self._scale(super().forward(x))

    def ungained(self, x: Tensor) -> Tensor:
        """The layers alone, without the gain: the function every level shares (a search over
        the synthesis input works on it, with steps of one size at every level)."""
        return super().forward(x)


class MGSSNetVR(MGSSNet):
    """MGSSNet with gain units: every rate of :data:`LEVEL_LAMBDAS` from one network.

    Args:
        levels: number of gain levels (default: one per entry of :data:`LEVEL_LAMBDAS`).
        reference_lambda: the lambda of the fixed-rate weights a run warm-starts from; the gains
            start at ``sqrt(lambda_l / reference_lambda)`` (only the initialisation uses it).
        levels_below: how many of ``levels`` lie below :data:`LEVEL_LAMBDAS`'s level 0, at the
            lambdas of :data:`BELOW_LAMBDAS` (0: the scale starts at level 0's lambda); levels
            beyond ``levels_below + len(LEVEL_LAMBDAS)`` take those of :data:`ABOVE_LAMBDAS`.
        **kwargs: :class:`.mgssnet.MGSSNet`'s configuration (``N``, ``M``, ``beta``, ...).

    Raises:
        ValueError: more levels than the lambda tables hold.
    """

    arch = "mgssnet-vr"

    def __init__(self, levels: int = len(LEVEL_LAMBDAS),
                 reference_lambda: float = LEVEL_LAMBDAS[REFERENCE_LEVEL], levels_below: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        below = int(levels_below)
        if not 0 <= below <= len(BELOW_LAMBDAS):
            raise ValueError(f"levels_below must be 0..{len(BELOW_LAMBDAS)}, got {levels_below}")
        most = below + len(LEVEL_LAMBDAS) + len(ABOVE_LAMBDAS)
        if not 2 <= int(levels) <= most:
            raise ValueError(f"levels must be 2..{most} with levels_below={below}, got {levels}")
        self.config["levels"] = int(levels)
        if below:  # absent: the configs of older weights
            self.config["levels_below"] = below
        self.level_lambdas: tuple[float, ...] = scale_lambdas(int(levels), below)
        M = self.config["M"]
        # log-gains, initialised so that the step size scales as 1 / sqrt(lambda) around the
        # lambda the warm-start weights were trained at (``reference_lambda``; only the init
        # depends on it): the MSE-optimal uniform quantizer's law
        ref = math.log(float(reference_lambda))
        init = torch.tensor([0.5 * (math.log(lam) - ref) for lam in self.level_lambdas])
        self.log_gain = nn.Parameter(init[:, None].repeat(1, M).clone())
        self.log_inverse_gain = nn.Parameter(-init[:, None].repeat(1, M).clone())
        self._rate = _RateState(self)
        self.g_a = _Gained(self.g_a, self._rate, "out")
        self.g_s = _Gained(self.g_s, self._rate, "in")
        self.set_rate(float(min(REFERENCE_LEVEL + below, levels - 1)))

    @property
    def levels(self) -> int:
        """How many rate levels the gain tables hold (valid levels: ``0 .. levels - 1``)."""
        return int(self.config["levels"])

    @property
    def levels_below(self) -> int:
        """How many levels lie below :data:`LEVEL_LAMBDAS`'s level 0 (this model's level
        ``levels_below`` has that lambda)."""
        return int(self.config.get("levels_below", 0))

    @property
    def levels_above(self) -> int:
        """How many levels lie above :data:`LEVEL_LAMBDAS`'s top (at :data:`ABOVE_LAMBDAS`)."""
        return max(0, self.levels - self.levels_below - len(LEVEL_LAMBDAS))

    def lambdas_at(self, level: Tensor | float) -> Tensor:
        """The training lambda at each continuous ``level`` of this model's scale.

        Args:
            level: a level or a tensor of them.

        Returns:
            A float32 tensor of ``level``'s shape (:func:`lambda_at` on :attr:`level_lambdas`).
        """
        return lambda_at(level, self.level_lambdas)

    def check_level(self, level: float) -> float:
        """``level`` as a float, or a ``ValueError`` naming the model's range.

        Args:
            level: the rate level asked for (fractional levels interpolate).

        Returns:
            The level as a float.

        Raises:
            ValueError: not a number, or outside ``0 .. levels - 1``.
        """
        return check_level(level, self.levels)

    def gain_vectors(self, level: Tensor, inverse: bool = False) -> Tensor:
        """The gain (or inverse gain) at each of ``level`` (1-D), as ``B x M x 1 x 1``, exponentially
        interpolated between the two nearest levels.

        Args:
            level: one level per image, 1-D.
            inverse: the inverse gains (synthesis side) instead of the gains (analysis side).

        Returns:
            ``B x M x 1 x 1`` gains.
        """
        table = self.log_inverse_gain if inverse else self.log_gain
        level = level.to(table.device)
        lo = level.floor().clamp(0, self.levels - 2).long()
        t = (level - lo).to(table.dtype)[:, None]
        return torch.exp(table[lo] * (1 - t) + table[lo + 1] * t)[:, :, None, None]

    def set_rate(self, level: float | Tensor) -> None:
        """Code at ``level`` from now on: one float for every sample, or one per sample.

        Args:
            level: a level in ``[0, levels - 1]`` (quality ``q`` is level ``q``), or a 1-D tensor
                of them, one per sample of the next batches.

        Raises:
            ValueError: a level outside the model's range, or not a number.
        """
        if isinstance(level, Tensor) and level.ndim == 1:
            level = level.detach().to(torch.float64)
            if not bool(((level >= 0) & (level <= self.levels - 1)).all()):
                raise ValueError(f"rate levels outside this model's range 0..{self.levels - 1}")
            self._rate.level = level
        else:
            self._rate.level = torch.tensor([self.check_level(level)], dtype=torch.float64)
