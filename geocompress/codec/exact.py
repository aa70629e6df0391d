"""Exact, platform-independent evaluation of the networks that drive the entropy coder.

The decoder must rebuild the encoder's Gaussian scales and means *bit for bit*: a single scale that
lands on the other side of a table boundary selects another CDF and the rANS decoder produces
garbage from then on. Float convolutions are not reproducible across CPU/GPU, batch sizes or thread
counts, so the hyper decoder, the context model and the entropy-parameter network (everything
between the bytes and the CDF choice) run here in *fixed point carried by float64*:

* weights and biases are rounded to multiples of 2**-WEIGHT_BITS, activations to multiples of
  2**-ACT_BITS after every layer;
* every product is then a multiple of 2**-(WEIGHT_BITS + ACT_BITS) and every partial sum stays far
  below 2**53 of those units (checked on each call), so float64 adds and multiplies are exact
  and *any* summation order -- any BLAS, any thread count, GPU or CPU -- gives the same bits;
* LeakyReLU is one correctly rounded IEEE multiply followed by re-rounding to the grid;
  PixelShuffle only moves values.

cuDNN is bypassed for these few layers because its FFT / Winograd algorithms transform values out
of the grid; PyTorch's own im2col + GEMM path keeps them exact. The cost is small: these networks
act on the 16x downsampled latent.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fixed_point import ACT_BITS, WEIGHT_BITS, next_bound


def to_grid(x: Tensor, bits: int = ACT_BITS) -> Tensor:
    """Round to the nearest multiple of 2**-bits (exact: scaling by a power of two is exact).

    Args:
        x: any tensor.
        bits: fractional bits of the grid.

    Returns:
        ``x`` on the grid, float64: every later sum of grid values is exact in float64, which is
        what makes the entropy parameters identical on every machine.
    """
    s = float(2 ** bits)
    return torch.round(x.to(torch.float64) * s) / s


class ExactUnsupported(TypeError):
    """A layer the exact path cannot evaluate bit-exactly: such a model is refused rather than
    coded with sums that could differ from machine to machine."""


class _Layer:
    """One fixed-point layer prepared from a torch module (weights gridded once)."""

    weight: Tensor | None = None

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.kind = type(module).__name__
        self.module = module
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            w = module.weight.detach()
            mask = getattr(module, "mask", None)  # compressai MaskedConv2d
            if mask is not None:
                w = w * mask
            self.weight = to_grid(w, WEIGHT_BITS).to(device)
            b = module.bias
            self.bias = None if b is None else to_grid(b.detach(), WEIGHT_BITS).to(device)
            dims = (1, 2, 3) if isinstance(module, nn.Conv2d) else (0, 2, 3)
            self.row_sum = float(self.weight.abs().sum(dim=dims).max())
            self.bias_max = 0.0 if self.bias is None else float(self.bias.abs().max())
            self.pointwise = (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
                              and module.stride == (1, 1) and module.groups == 1)
            if self.pointwise:  # a 1x1 convolution is a matrix product: cheaper, as exact
                self.matrix = self.weight.reshape(self.weight.shape[0], -1).t().contiguous()
            if mask is not None and isinstance(module, nn.Conv2d):
                # the context model at one position: only the causal taps are non-zero
                taps = mask[0, 0].reshape(-1).nonzero().reshape(-1).to(device)
                o, c = self.weight.shape[:2]
                self.taps = taps
                self.causal = self.weight.reshape(o, c, -1)[:, :, taps].reshape(o, -1).t().contiguous()
        elif isinstance(module, nn.LeakyReLU):
            self.slope = float(module.negative_slope)
        elif not isinstance(module, (nn.ReLU, nn.PixelShuffle, nn.Identity)):
            raise ExactUnsupported(f"no exact evaluation for layer {self.kind}")

    def bound(self, bound_in: float) -> float:
        """Largest |output| a conv can produce from inputs bounded by ``bound_in``; refuses when a
        partial sum could leave float64's exact range."""
        if not isinstance(self.module, (nn.Conv2d, nn.ConvTranspose2d)):
            return bound_in
        return next_bound(bound_in, self.row_sum, self.bias_max, self.kind)

    def conv_valid(self, x: Tensor) -> Tensor:
        """The masked convolution at one position (a k x k crop -> 1 x 1), causal taps only."""
        self.bound(float(x.abs().max()) if x.numel() else 0.0)
        b = x.shape[0]
        cols = x.reshape(b, x.shape[1], -1)[:, :, self.taps].reshape(b, -1)
        y = cols @ self.causal
        if self.bias is not None:
            y = y + self.bias
        return to_grid(y).reshape(b, -1, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        m = self.module
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if self.pointwise:
                b, c, h, w = x.shape
                y = x.permute(0, 2, 3, 1).reshape(-1, c) @ self.matrix
                if self.bias is not None:
                    y = y + self.bias
                y = y.reshape(b, h, w, -1).permute(0, 3, 1, 2)
            elif isinstance(m, nn.Conv2d):
                y = F.conv2d(x, self.weight, self.bias, m.stride, m.padding, m.dilation, m.groups)
            else:
                y = F.conv_transpose2d(x, self.weight, self.bias, m.stride, m.padding,
                                       m.output_padding, m.groups, m.dilation)
            return to_grid(y)
        if isinstance(m, nn.LeakyReLU):
            return to_grid(torch.where(x >= 0, x, x * self.slope))
        if isinstance(m, nn.ReLU):
            return torch.clamp_min(x, 0.0)
        if isinstance(m, nn.PixelShuffle):
            return F.pixel_shuffle(x, m.upscale_factor)
        return x


def _flatten(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _flatten(child)]
    return [module]


class ExactNet:
    """A ``nn.Sequential`` (or single layer) evaluated exactly.

    Each convolution checks its actual input: ``max|x| * max row sum of |w| + max|b|`` bounds
    every partial sum in any order, so no layer can leave float64's exact range unnoticed. (A
    single check propagating worst-case gains from the net's input was tried first: with trained
    weights the product of the layers' gains overflows the limit while the real values stay
    thousands of times below it.)"""

    def __init__(self, module: nn.Module, device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        self.layers = [_Layer(m, device) for m in _flatten(module)]

    def __call__(self, x: Tensor, snap: bool = True) -> Tensor:
        """``snap=False`` for inputs already on the activation grid (outputs of exact layers)."""
        if snap:
            x = to_grid(x)
        with no_cudnn():
            for layer in self.layers:
                if layer.weight is not None:
                    layer.bound(float(x.abs().max()) if x.numel() else 0.0)
                x = layer(x)
        return x

    def rows(self, x: Tensor) -> Tensor:
        """The net on a batch of positions (``n x channels``, already on the grid), when every
        convolution is 1x1: matrix products on the rows, with the same exactness checks.

        Args:
            x: ``n x channels`` rows, on the grid.

        Returns:
            The net's output rows, on the grid.

        Raises:
            ExactUnsupported: a layer is not a 1x1 convolution or an activation the exact path knows.
        """
        for layer in self.layers:
            if layer.weight is not None:
                if not layer.pointwise:
                    raise ExactUnsupported(f"rows() needs 1x1 convolutions, {layer.kind} is not")
                layer.bound(float(x.abs().max()) if x.numel() else 0.0)
                x = x @ layer.matrix
                if layer.bias is not None:
                    x = x + layer.bias
                x = to_grid(x)
            elif isinstance(layer.module, nn.LeakyReLU):
                x = to_grid(torch.where(x >= 0, x, x * layer.slope))
            elif isinstance(layer.module, nn.ReLU):
                x = torch.clamp_min(x, 0.0)
            elif not isinstance(layer.module, nn.Identity):
                raise ExactUnsupported(f"rows() cannot evaluate {layer.kind}")
        return x


@contextlib.contextmanager
def no_cudnn():
    """A context without cuDNN and without gradients: cuDNN picks convolution algorithms per run,
    whose float sums differ in the last bits; the exact path needs the same sums everywhere.

    Returns:
        A context manager (yields nothing).
    """
    with torch.backends.cudnn.flags(enabled=False), torch.no_grad():
        yield
