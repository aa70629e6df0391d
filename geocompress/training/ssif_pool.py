"""SSIF-AM's pooling terms, ``c + avgpool3(c) + maxpool3(c)``, for training on CPU as one native
kernel each way.

PyTorch's CPU pooling kernels (forward and backward) and the additions between them cost SSIF-AM
more than its seven depthwise convolutions; :mod:`.native`'s fused kernel gives the same values and
gradients (ties of the maximum go to the window's first, as PyTorch's do). Figures:
``catalogs/benchmarks.md``.
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch
from torch import Tensor, nn

from . import native


@cache
def _lib():
    lib = native.load("ssif_pool")
    if lib is None:
        return None
    for fn in (lib.ssif_pool_forward, lib.ssif_pool_backward):
        fn.restype = None
        fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_long] * 4 + [ctypes.c_int]
    return lib


def eligible(m: nn.Module) -> bool:
    """An SSIF-AM block whose pools are the 3 x 3, stride-1 ones the kernel computes.

    Args:
        m: a module.

    Returns:
        Whether :func:`pools` can run its pooling terms natively.
    """
    from geocompress.models.blocks import SSIFAM

    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return (isinstance(m, SSIFAM)
            and all(pair(p.kernel_size) == (3, 3) and pair(p.stride) == (1, 1) and pair(p.padding) == (1, 1)
                    and not p.ceil_mode for p in (m.avg, m.max))
            and not m.avg.count_include_pad and m.avg.divisor_override is None
            and pair(m.max.dilation) == (1, 1))


class _Pools(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        xl = native.nhwc(x)
        out = torch.empty_like(xl, memory_format=torch.channels_last)
        arg = torch.empty((n, h, w, c), dtype=torch.uint8)
        _lib().ssif_pool_forward(xl.data_ptr(), out.data_ptr(), arg.data_ptr(), n, h, w, c,
                                 torch.get_num_threads())
        ctx.save_for_backward(arg)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernel's gradient has no graph of its own
    def backward(ctx, go: Tensor) -> Tensor:
        (arg,) = ctx.saved_tensors
        n, h, w, c = arg.shape
        gl = native.nhwc(go)
        gx = torch.empty_like(gl, memory_format=torch.channels_last)
        _lib().ssif_pool_backward(gl.data_ptr(), arg.data_ptr(), gx.data_ptr(), n, h, w, c,
                                  torch.get_num_threads())
        return gx.to(go.dtype)


def pools(block: nn.Module, c: Tensor) -> Tensor:
    """``block.pools(c)`` through the native kernels where they apply (float32 on CPU, training).

    Args:
        block: an :func:`eligible` SSIF-AM block.
        c: its 5x5 convolution's output.

    Returns:
        ``c + avgpool(c) + maxpool(c)``.
    """
    if (torch.is_grad_enabled() and c.requires_grad and c.device.type == "cpu"
            and c.dtype == torch.float32 and c.ndim == 4 and _lib() is not None):
        return _Pools.apply(c)
    return type(block).pools(block, c)
