"""Mixed precision for training: which layers may run in bf16 / fp16 autocast, and which may not.

On CPU (AMX-BF16 / AVX512-BF16) bf16 autocast speeds up dense convolutions and attention products
several times, while depthwise convolutions' bf16 backward is slower than float32's; the entropy
models need float32 for their CDF logits and likelihood bounds. Measured figures:
``catalogs/benchmarks.md`` (``benchmarks/train_speed.py``).
"""

from __future__ import annotations

import types

import torch

from . import depthwise, ssif_pool


def keep_float32(module: torch.nn.Module) -> bool:
    """Layers that stay in float32 inside a bf16 / fp16 autocast: the entropy models (their CDF
    logits and likelihood bounds need it) and, on CPU, depthwise convolutions, whose bf16 backward
    is several times slower than float32's (``benchmarks/train_speed.py``).

    Args:
        module: a layer.

    Returns:
        Whether it stays in float32.
    """
    from compressai.entropy_models import EntropyModel

    if isinstance(module, EntropyModel):
        return True
    return isinstance(module, torch.nn.Conv2d) and module.groups > 1


def prepare_layers(model: torch.nn.Module, device_type: str, amp: bool) -> None:
    """Per-layer training setup: with ``amp`` the :func:`keep_float32` layers run outside autocast
    on float32 inputs; on CPU, depthwise convolutions take the native weight gradient
    (:mod:`.depthwise`) and SSIF-AM's pooling terms the fused native kernels (:mod:`.ssif_pool`)
    in either mode. The new forwards are bound methods, so a deep copy of the model calls its
    own layers.

    Args:
        model: the model being trained (changed in place; done once per model).
        device_type: ``"cpu"`` or ``"cuda"``.
        amp: whether the run uses autocast.
    """
    cpu = device_type == "cpu"
    for m in model.modules():
        if getattr(m, "_geocompress_prepared", False):
            continue
        native, fp32 = cpu and depthwise.eligible(m), amp and keep_float32(m)
        if cpu and ssif_pool.eligible(m):
            m.pools = types.MethodType(ssif_pool.pools, m)
        elif native or fp32:
            m._geocompress_native, m._geocompress_fp32 = native, fp32
            m._geocompress_device = device_type
            m.forward = types.MethodType(_prepared_forward, m)
        else:
            continue
        m._geocompress_prepared = True


def _run(self: torch.nn.Module, *args, **kw):
    if self._geocompress_native:
        return depthwise.conv(self, *args, **kw)
    return type(self).forward(self, *args, **kw)


def _prepared_forward(self: torch.nn.Module, *args, **kw):
    if not self._geocompress_fp32:
        return _run(self, *args, **kw)
    with torch.autocast(device_type=self._geocompress_device, enabled=False):
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        return _run(self, *args, **kw)


TRAIN_PRECISIONS = ("auto", "float32", "mixed")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training run, or None for plain float32.

    ``mixed`` is bf16 autocast for the dense convolutions and attention products with the
    :func:`keep_float32` layers in float32; on CUDA fp16 (with a ``GradScaler``) where bf16 is
    not supported. ``auto`` is ``mixed`` on CUDA and on CPUs with native bf16 (AMX / AVX512-BF16),
    float32 elsewhere.

    Args:
        precision: ``"float32"``, ``"mixed"`` or ``"auto"``.
        device: the training device.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or None.

    Raises:
        ValueError: an unknown precision.
    """
    from geocompress.codec.precision import cpu_bf16_supported

    if precision not in TRAIN_PRECISIONS:
        raise ValueError(f"training precision must be one of {TRAIN_PRECISIONS}, got {precision!r}")
    if precision == "float32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "auto" and not cpu_bf16_supported():
        return None
    return torch.bfloat16
