"""Depthwise convolutions for training on CPU with a fast weight gradient.

oneDNN's weight gradient of a depthwise convolution dominated MGSSNet's CPU training step (SSIF-AM
has seven per block); :mod:`.native`'s kernel computes the same sums several times faster. The
forward and the input gradient stay PyTorch's (oneDNN's are fast). Figures:
``catalogs/benchmarks.md`` (``benchmarks/train_speed.py``).
"""

from __future__ import annotations

import ctypes
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import native


@cache
def _kernel():
    lib = native.load("depthwise_grad")
    if lib is None:
        return None
    fn = lib.depthwise_weight_grad
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_long] * 8 + [ctypes.c_int]
    return fn


def eligible(m: nn.Module) -> bool:
    """Depthwise, stride 1, zero "same" padding: the case the kernel computes.

    Args:
        m: a module.

    Returns:
        Whether :func:`conv` can take its weight gradient natively.
    """
    return (isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels
            and m.stride == (1, 1) and m.dilation == (1, 1) and m.padding_mode == "zeros"
            and isinstance(m.padding, tuple)
            and m.padding == (m.kernel_size[0] // 2, m.kernel_size[1] // 2)
            and m.kernel_size[0] % 2 == 1 and m.kernel_size[1] % 2 == 1)


def weight_grad(x: Tensor, go: Tensor, kernel_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """``d loss / d weight`` and ``d loss / d bias`` of a depthwise conv from its input and its
    output gradient, in one pass of the native kernel.

    Args:
        x: the convolution's input, ``N x C x H x W``.
        go: the gradient of its output, same shape.
        kernel_size: ``(kh, kw)``.

    Returns:
        ``(d weight, d bias)``.

    Raises:
        MemoryError: the kernel could not allocate its buffers.
    """
    fn = _kernel()
    n, c, h, w = x.shape
    kh, kw = kernel_size
    xl, gl = native.nhwc(x), native.nhwc(go)
    out, bias = torch.empty(c, 1, kh, kw), torch.empty(c)
    if fn(xl.data_ptr(), gl.data_ptr(), out.data_ptr(), bias.data_ptr(), n, h, w, c, kh, kw,
          kh // 2, kw // 2, torch.get_num_threads()):
        raise MemoryError("depthwise weight gradient: out of memory")
    return out, bias


class _DepthwiseConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        return F.conv2d(x, weight, bias, 1, padding, 1, x.shape[1])

    @staticmethod
    @torch.autograd.function.once_differentiable  # the kernel's gradient has no graph of its own
    def backward(ctx, go: Tensor):
        x, weight = ctx.saved_tensors
        go = go.contiguous(memory_format=torch.channels_last)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.aten.convolution_backward(
                go, x, weight, None, (1, 1), ctx.padding, (1, 1), False, (0, 0), x.shape[1],
                (True, False, False))[0]
        if ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2]):
            gw, gb = weight_grad(x, go, tuple(weight.shape[2:]))
            gw = gw if ctx.needs_input_grad[1] else None
            gb = gb if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb, None


def conv(m: nn.Conv2d, x: Tensor) -> Tensor:
    """``m(x)`` with the fast weight gradient where it applies (float32 on CPU, training).

    Args:
        m: an :func:`eligible` depthwise convolution.
        x: its input.

    Returns:
        Its output (the same values as ``m(x)``).
    """
    if (torch.is_grad_enabled() and m.weight.requires_grad and x.device.type == "cpu"
            and x.dtype == torch.float32 and m.weight.dtype == torch.float32 and _kernel() is not None):
        return _DepthwiseConv.apply(x, m.weight, m.bias, m.padding)
    return m._conv_forward(x, m.weight, m.bias)
