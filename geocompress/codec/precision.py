"""Numeric precision of the transforms (``g_a``, ``g_s``, ``h_a``): what runs where, and how fast.

Only the transforms follow the precision mode. The networks that choose the entropy coder's
distributions (hyper decoder, context model, entropy parameters) always run in exact fixed point
(:mod:`.exact`), and the hyper latent's dequantization is done in float64 from the checkpoint's
medians, so a string written in any mode decodes correctly in any other mode, on any device.
What a mode changes is the decoded pixels' last bits: only ``float64`` is pixel-identical across
machines, batch sizes and thread counts.

Modes:

* ``float64``: the exact mode (reference; slowest).
* ``float32``: float32 weights, channels-last activations on CPU.
* ``bfloat16``: float32 weights, channels-last, ``torch.autocast`` to bfloat16 (on CPUs with
  AMX-BF16 or AVX512-BF16, and CUDA devices that support it);
* ``float16``: autocast to float16 (CUDA only);
* ``auto``: the fastest mode the device runs well: ``bfloat16`` where the CPU or GPU supports it,
  else ``float16`` on CUDA, else ``float32``. Its measured PSNR against ``float64`` is in
  ``catalogs/benchmarks.md`` (``benchmarks/codec_speed.py``).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator

import torch

PRECISIONS = ("auto", "bfloat16", "float16", "float32", "float64")


@functools.lru_cache(maxsize=None)
def cpu_bf16_supported() -> bool:
    """Whether this CPU does bfloat16 matrix work natively (AMX-BF16 or AVX512-BF16): without
    either, oneDNN emulates bfloat16 and it is slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: ask torch what its kernels were dispatched for
        return torch.backends.cpu.get_cpu_capability() in ("AMX", "AVX512_BF16")
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The concrete mode ``precision`` means on ``device`` (``auto`` resolved, errors named)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if precision == "auto":
        if cuda:
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bfloat16" if cpu_bf16_supported() else "float32"
    if precision == "float16" and not cuda:
        raise ValueError("precision='float16' runs on CUDA only; on CPU use 'bfloat16' or 'float32'")
    return precision


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype the model's weights are held in: reduced modes autocast from float32 weights,
    so the entropy models' parameters (quantiles, scale table) never lose bits."""
    return torch.float64 if precision == "float64" else torch.float32


class Transforms:
    """Runs a model's transforms in one precision mode; returns float32 / float64 tensors."""

    def __init__(self, model: torch.nn.Module, precision: str, device: torch.device) -> None:
        self.precision = precision
        self.device = device
        self.channels_last = precision != "float64" and device.type == "cpu"
        self.autocast = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
        self.dtype = weight_dtype(precision)
        if self.channels_last:
            for name in ("g_a", "g_s"):
                module = getattr(model, name, None)
                if module is not None:
                    module.to(memory_format=torch.channels_last)

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        if self.autocast is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.autocast):
            yield

    def __call__(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), self._context():
            out = module(x)
        return out.to(self.dtype).contiguous()
