"""SSIF-AM's 3 x 3 max pooling (stride 1, padding 1) for training on CPU, with native kernels.

PyTorch's CPU ``max_pool2d_with_indices`` forward and backward took SSIF-AM longer than its seven
depthwise convolutions; :mod:`.native`'s kernels give the same values and gradients (ties go to
the first maximum of the window, as PyTorch's do). Figures: ``catalogs/benchmarks.md``.
"""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native


def _lib():
    lib = native.load("max_pool3")
    if lib is None:
        return None
    for fn in (lib.max_pool3_forward, lib.max_pool3_backward):
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 4 + [ctypes.c_int]
    return lib


def eligible(m: nn.Module) -> bool:
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return (isinstance(m, nn.MaxPool2d) and pair(m.kernel_size) == (3, 3) and pair(m.stride) == (1, 1)
            and pair(m.padding) == (1, 1) and pair(m.dilation) == (1, 1) and not m.ceil_mode
            and not m.return_indices)


def _nhwc(t: Tensor) -> Tensor:
    return t.permute(0, 2, 3, 1).contiguous()  # no copy when already channels-last


class _MaxPool3(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        xl = _nhwc(x)
        out = torch.empty_like(xl)
        arg = torch.empty(xl.shape, dtype=torch.uint8)
        _lib().max_pool3_forward(xl.data_ptr(), out.data_ptr(), arg.data_ptr(), n, h, w, c,
                                 torch.get_num_threads())
        ctx.save_for_backward(arg)
        return out.permute(0, 3, 1, 2)  # channels-last N C H W

    @staticmethod
    def backward(ctx, go: Tensor) -> Tensor:
        (arg,) = ctx.saved_tensors
        n, h, w, c = arg.shape
        gl = _nhwc(go.float())
        gx = torch.empty_like(gl)
        _lib().max_pool3_backward(gl.data_ptr(), arg.data_ptr(), gx.data_ptr(), n, h, w, c,
                                  torch.get_num_threads())
        return gx.permute(0, 3, 1, 2).to(go.dtype)


def max_pool(m: nn.MaxPool2d, x: Tensor) -> Tensor:
    """``m(x)`` through the native kernels where they apply (float32 on CPU, training)."""
    if (torch.is_grad_enabled() and x.requires_grad and x.device.type == "cpu"
            and x.dtype == torch.float32 and x.ndim == 4 and _lib() is not None):
        return _MaxPool3.apply(x)
    return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
