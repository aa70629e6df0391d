"""MGSSNet's attention blocks: SSIF-AM (local, multiscale), MHG-AM (global) and LGCM (their fusion).

Shapes are preserved by every block (B x C x H x W in, same out), so a block can be dropped into any
stage of an analysis or synthesis transform, which is how the paper's ablation and generalization
experiments use them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SSIFAM(nn.Module):
    """Spatial-spectral information fusion attention module (paper eq. 7, Fig. 2).

    ``attn = 1x1( strip5(c) + strip7(c) + strip9(c) + avgpool(c) + maxpool(c) + c )`` with
    ``c = conv5x5(x)`` and ``strip_k = conv(k x 1) . conv(1 x k)``; output ``x * attn + x``.

    The paper does not state the convolution groups; its argument for strip convolutions (a wide
    receptive field "with fewer parameters") is the one of SegNeXt's MSCA, which this block
    mirrors, so the 5x5 and strip convolutions are depthwise and the 1x1 convolution mixes the
    channels ("spectral fusion"). ``depthwise=False`` gives dense convolutions instead.

    Args:
        channels: input and output channels.
        kernels: the strip convolutions' lengths, one strip branch each.
        pool: the average / max pooling window.
        depthwise: depthwise 5x5 and strip convolutions (see above).
    """

    def __init__(self, channels: int, kernels: tuple[int, ...] = (5, 7, 9), pool: int = 3,
                 depthwise: bool = True) -> None:
        super().__init__()
        groups = channels if depthwise else 1
        self.local = nn.Conv2d(channels, channels, 5, padding=2, groups=groups)
        self.strips = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, (1, k), padding=(0, k // 2), groups=groups),
                nn.Conv2d(channels, channels, (k, 1), padding=(k // 2, 0), groups=groups),
            )
            for k in kernels
        )
        self.avg = nn.AvgPool2d(pool, stride=1, padding=pool // 2, count_include_pad=False)
        self.max = nn.MaxPool2d(pool, stride=1, padding=pool // 2)
        self.fuse = nn.Conv2d(channels, channels, 1)
        # the block starts as the identity (x * 0 + x): a deep transform of gated residual blocks
        # then trains like its plain baseline first instead of multiplying random gates together
        nn.init.zeros_(self.fuse.weight)
        nn.init.zeros_(self.fuse.bias)

    def forward(self, x: Tensor) -> Tensor:
        # memory-bound at full resolution: accumulate in place, and x * attn + x as one addcmul
        """``x * attn + x`` (eq. 7).

        Args:
            x: ``B x C x H x W``.

        Returns:
            A tensor of ``x``'s shape.
        """
        c = self.local(x)
        s = self.pools(c)
        for strip in self.strips:
            s += strip(c)
        return torch.addcmul(x, x, self.fuse(s))

    def pools(self, c: Tensor) -> Tensor:
        """``c + avgpool(c) + maxpool(c)``: eq. 7's identity and pooling terms (CPU training
        replaces this method with one fused native kernel, ``geocompress.training.ssif_pool``).

        Args:
            c: the 5x5 convolution's output.

        Returns:
            The sum, ``c``'s shape.
        """
        s = c + self.avg(c)
        fast_max = self.max.kernel_size == 3 and not (torch.is_grad_enabled() and c.requires_grad)
        s += max_pool3(c) if fast_max else self.max(c)  # max_pool3's backward is slow: inference only
        return s


def max_pool3(x: Tensor) -> Tensor:
    """``MaxPool2d(3, stride=1, padding=1)`` as four elementwise maxima of shifted views: the same
    values, faster on CPU in channels-last bfloat16 inference (its backward, through ``maximum``, is
    several times slower than max pooling's, so training keeps ``MaxPool2d``).

    Args:
        x: ``... x H x W``.

    Returns:
        The pooled tensor, ``x``'s shape.
    """
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    r = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(r[..., :-2, :], r[..., 1:-1, :]), r[..., 2:, :])


class MHGAM(nn.Module):
    """Multihead global attention module, following Algorithm 1 of the paper step by step.

    Q, K, V come from one linear layer over the flattened positions (step 2); a parallel 3x3
    convolution gives ``x1`` (step 4); attention ``softmax(QK^T / sqrt(d))`` with dropout (step 6);
    output projection (step 8); ``attn4 = attn3 + x1`` (step 10); ``attn6 = conv5x5(attn4) * x1``
    (step 11); output ``x + attn6`` (step 12). Eq. (8) writes the Hadamard product with the input
    instead of ``x1``; Algorithm 1 is the more detailed of the two and is followed here.

    Args:
        channels: input and output channels; divisible by ``heads``.
        heads: attention heads.
        dropout: dropout on the attention weights (training only).

    Raises:
        ValueError: ``channels`` not divisible by ``heads``.
    """

    def __init__(self, channels: int, heads: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"MHG-AM: channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.drop = nn.Dropout(dropout)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv5 = nn.Conv2d(channels, channels, 5, padding=2)
        nn.init.zeros_(self.conv5.weight)  # starts as the identity, as SSIF-AM does
        nn.init.zeros_(self.conv5.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Algorithm 1 over every position of ``x`` (global: quadratic in ``H * W``).

        Args:
            x: ``B x C x H x W``.

        Returns:
            A tensor of ``x``'s shape.
        """
        b, c, h, w = x.shape
        n, d = h * w, c // self.heads
        tokens = x.flatten(2).transpose(1, 2)                                  # b n c
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)                            # step 2-3
        x1 = self.conv3(x)                                                     # step 4
        q, k, v = (t.reshape(b, n, self.heads, d).transpose(1, 2) for t in (q, k, v))  # step 5
        # steps 6-7, softmax(QK^T / sqrt(d)) V with dropout on the weights
        out = attention(q, k, v, self.drop.p if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, c)                             # step 7-8
        out = self.proj(out).transpose(1, 2).reshape(b, c, h, w)               # step 8-9
        out = self.conv5(out + x1) * x1                                        # step 10-11
        return x + out                                                         # step 12


# a training batch's attention weights up to this many elements are materialised (below)
MATERIALISE_LIMIT = 1 << 25


def attention(q: Tensor, k: Tensor, v: Tensor, dropout: float = 0.0) -> Tensor:
    """``softmax(q k^T / sqrt(d)) v``. Without gradients (coding, any window size) as one fused
    kernel that never materialises the n x n weights, so memory stays bounded; in bf16 training
    on CPU, where the windows are small, as plain matrix products, whose backward is faster than
    the fused kernel's in bf16 (not in float32: ``catalogs/benchmarks.md``).

    Args:
        q: queries, ``B x heads x n x d``.
        k: keys, same shape.
        v: values, same shape.
        dropout: dropout probability on the weights.

    Returns:
        ``B x heads x n x d``.
    """
    b, h, n, d = q.shape
    if not (torch.is_grad_enabled() and q.device.type == "cpu" and q.dtype == torch.bfloat16
            and b * h * n * n <= MATERIALISE_LIMIT):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
    w = torch.softmax((q * d ** -0.5) @ k.transpose(-1, -2), dim=-1)
    if dropout:
        w = F.dropout(w, dropout)
    return w @ v


class LGCM(nn.Module):
    """Local-global collaboration module (eq. 9): ``SSIF-AM(x) + beta * MHG-AM(x)``.

    Args:
        channels: input and output channels.
        beta: the global branch's weight.
        heads: MHG-AM's heads.
    """

    def __init__(self, channels: int, beta: float = 0.1, heads: int = 4) -> None:
        super().__init__()
        self.beta = float(beta)
        self.local = SSIFAM(channels)
        self.glob = MHGAM(channels, heads=heads)

    def forward(self, x: Tensor) -> Tensor:
        """Args:
            x: ``B x C x H x W``.

        Returns:
            A tensor of ``x``'s shape.
        """
        return self.local(x) + self.beta * self.glob(x)
