"""One registry for every architecture geocompress can train and code, by the names users know."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from compressai.models import (
    Cheng2020Attention,
    CompressionModel,
    FactorizedPriorReLU,
    JointAutoregressiveHierarchicalPriors,
    MeanScaleHyperprior,
    ScaleHyperprior,
)

from .arch_names import ARCH_NAMES
from .generalization import GENERALIZATION_MODULES, FactorizedReLUWithBlock
from .mgssnet import MGSSNet
from .variable_rate import LEVEL_LAMBDAS, MGSSNetVR

# name -> (class, default config). Defaults are CompressAI's zoo values for its low qualities
# (N=128, M=192), small enough to train on modest hardware.
ARCHITECTURES: dict[str, tuple[Callable[..., CompressionModel], dict[str, Any]]] = {
    "mgssnet": (MGSSNet, {"N": 128, "M": 192, "beta": 0.1, "heads": 4, "modules": "full"}),
    # one network for every rate (gain units); the widths of the high-rate trunk it starts from
    "mgssnet-vr": (MGSSNetVR, {"N": 64, "M": 128, "beta": 0.1, "heads": 4, "modules": "full",
                               "levels": len(LEVEL_LAMBDAS), "reference_lambda": LEVEL_LAMBDAS[6]}),
    "bmshj2018-factorized": (FactorizedPriorReLU, {"N": 128, "M": 192}),
    "bmshj2018-hyperprior": (ScaleHyperprior, {"N": 128, "M": 192}),
    "mbt2018-mean": (MeanScaleHyperprior, {"N": 128, "M": 192}),
    "mbt2018": (JointAutoregressiveHierarchicalPriors, {"N": 128, "M": 192}),
    "cheng2020-attn": (Cheng2020Attention, {"N": 128}),
    # the paper's generalization experiment (Fig. 14): one MGSSNet block inside the ReLU baseline
    **{f"bmshj2018-factorized-{m}": (partial(FactorizedReLUWithBlock, module=m),
                                     {"N": 128, "M": 192, "beta": 0.1, "heads": 4})
       for m in GENERALIZATION_MODULES},
}


assert tuple(ARCHITECTURES) == ARCH_NAMES, "arch_names.ARCH_NAMES must list the registry"


def names() -> list[str]:
    """The registry's architecture names, in its order (the CLI's choices).

    Returns:
        The names.
    """
    return list(ARCHITECTURES)


def build(name: str, **config: Any) -> CompressionModel:
    """Build architecture ``name``; ``config`` overrides its defaults and is kept on ``model.config``
    so that a checkpoint can rebuild its own model.

    Args:
        name: a registry name (:func:`names`).
        **config: configuration overriding the architecture's defaults.

    Returns:
        The model, with ``config`` and ``arch`` set.

    Raises:
        ValueError: an unknown name or configuration key (a typo would otherwise build another
            model than the one asked for).
    """
    try:
        cls, defaults = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose one of {names()}") from None
    optional = {"in_channels", "transform_N"} if name.startswith("mgssnet") else set()
    optional |= {"levels_below"} if name == "mgssnet-vr" else set()
    unknown = set(config) - set(defaults) - optional
    if unknown:
        raise ValueError(f"{name}: unknown config keys {sorted(unknown)}; known: {sorted(defaults)}")
    full = {**defaults, **config}
    model = cls(**full)
    model.config = full  # type: ignore[attr-defined]
    model.arch = name  # type: ignore[attr-defined]
    return model
