"""MGSSNet (Shi et al., JSTARS 2024) on CompressAI's joint autoregressive + hyperprior skeleton.

Model / entropy split as in CompressAI: this module only defines transforms; entropy models and the
``forward`` (noisy-quantization training pass) come from
:class:`compressai.models.JointAutoregressiveHierarchicalPriors`, and actual coding to bytes lives
in :mod:`geocompress.codec`.

Architecture choices where the paper is ambiguous (recorded here, as the checkpoint reproduces them):

* Main encoder: four stages, each ``conv5x5/2 -> LeakyReLU -> conv3x3/1 -> GDN -> buffer block``
  (buffer = CompressAI's ``ResidualBlock``: conv, LeakyReLU, conv, LeakyReLU, + identity), then a
  3x3 projection to ``M`` latent channels so that ``y`` is not squashed by a GDN.
  The decoder mirrors it with three ``deconv5x5/2 -> LeakyReLU -> conv3x3 -> IGDN -> buffer``
  stages and a last ``deconv5x5/2`` that outputs the bands directly, as every CompressAI model
  does: post-processing at full resolution would triple the decoder's cost (measured in
  ``catalogs/models/mgssnet-training.md``) for the stage that mirrors the encoder's first,
  un-post-processed input convolution.
* Attention placement follows the ablation section III-F(4) (``modules="full"``): SSIF-AM after the
  1st and 2nd downsampling, LGCM after the 3rd; in the decoder LGCM after the 1st upsampling and
  SSIF-AM after the 2nd and 3rd. Eqs. (2) and (6) list a slightly different order; III-F is the
  placement the reported results were produced with. ``modules`` also gives the paper's ablation
  variants: ``baseline`` (no block), ``ssif`` (SSIF-AM after the first three stages both sides),
  ``mhg`` (MHG-AM after the 3rd downsampling / 1st upsampling).
* Initialisation (training only; the paper does not state one): each stage starts close to its
  shallow core ``conv5x5/2 -> LeakyReLU -> GDN``, as the attention blocks already start as the
  identity: the stride-1 convolution before each GDN starts as the identity plus a tenth of its
  default random init, and each buffer block's second convolution starts at zero (the block is the
  identity). It roughly halves the steps to a given loss (``catalogs/models/mgssnet-training.md``).
  The function class is unchanged; trained weights overwrite all of it.
* Hyper networks: five convolutions and four LeakyReLU each (eqs. 3-4), the shapes of CompressAI's
  Cheng2020 hyper encoder / decoder (subpixel upsampling in the decoder).
"""

from __future__ import annotations

from typing import Any

from compressai.layers import GDN, MaskedConv2d, ResidualBlock, conv3x3, subpel_conv3x3
from compressai.models import JointAutoregressiveHierarchicalPriors
from compressai.models.utils import conv, deconv
import torch
from torch import nn

from .blocks import LGCM, MHGAM, SSIFAM

MODULE_SETS = ("baseline", "ssif", "mhg", "full")


def _attention(kind: str | None, channels: int, beta: float, heads: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "ssif":
        return SSIFAM(channels)
    if kind == "mhg":
        return MHGAM(channels, heads=heads)
    if kind == "lgcm":
        return LGCM(channels, beta=beta, heads=heads)
    raise ValueError(kind)


def _placement(modules: str) -> tuple[list[str | None], list[str | None]]:
    """Blocks after encoder stages 1-4 and after decoder stages 1-3."""
    if modules == "baseline":
        enc = [None, None, None, None]
    elif modules == "ssif":
        enc = ["ssif", "ssif", "ssif", None]
    elif modules == "mhg":
        enc = [None, None, "mhg", None]
    elif modules == "full":
        enc = ["ssif", "ssif", "lgcm", None]
    else:
        raise ValueError(f"modules must be one of {MODULE_SETS}, got {modules!r}")
    dec = [enc[2], enc[1], enc[0]]  # mirror: decoder stage 1 works at encoder stage 3's scale
    return enc, dec


def _start_near_shallow(stages: nn.Sequential) -> None:
    """Identity-dominated init of the stride-1 conv before each GDN and of each buffer block
    (module docstring): a 17-convolution transform then trains like a 4-convolution one first."""
    mods = list(stages)
    for prev, mod in zip(mods, mods[1:]):
        if isinstance(mod, GDN) and isinstance(prev, nn.Conv2d) and prev.stride == (1, 1):
            with torch.no_grad():
                prev.weight.mul_(0.1).add_(nn.init.dirac_(torch.empty_like(prev.weight)))
                prev.bias.zero_()
        if isinstance(mod, ResidualBlock):
            nn.init.zeros_(mod.conv2.weight)
            nn.init.zeros_(mod.conv2.bias)


class MGSSNet(JointAutoregressiveHierarchicalPriors):
    """MGSSNet: SSIF-AM / MHG-AM / LGCM transforms with a joint autoregressive hyperprior.

    Shi et al., JSTARS 2024; architecture choices where the paper is ambiguous are in the module
    docstring.

    Args:
        N: channels of the hidden stages.
        M: latent channels.
        beta: LGCM's weight of the global branch.
        heads: MHG-AM's attention heads.
        modules: the attention placement, ``"full"`` or an ablation variant (``MODULE_SETS``).
        in_channels: input bands.
        transform_N: channels of the transforms' hidden stages where they differ from the hyper
            networks' ``N`` (a trunk widened after training, :mod:`geocompress.training.widen`);
            None: ``N``.
        **kwargs: passed to CompressAI's ``JointAutoregressiveHierarchicalPriors``.
    """

    arch = "mgssnet"

    def __init__(self, N: int = 128, M: int = 192, beta: float = 0.1, heads: int = 4,
                 modules: str = "full", in_channels: int = 3, transform_N: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(N=N, M=M, **kwargs)
        enc, dec = _placement(modules)
        self.config = {"N": int(N), "M": int(M), "beta": float(beta), "heads": int(heads),
                       "modules": modules, "in_channels": int(in_channels)}
        if transform_N is not None and int(transform_N) != int(N):
            self.config["transform_N"] = int(transform_N)  # absent: the configs of older weights
        hyper_N, N = N, int(transform_N or N)

        g_a: list[nn.Module] = []
        cin = in_channels
        for kind in enc:
            g_a += [conv(cin, N, kernel_size=5, stride=2), nn.LeakyReLU(inplace=True),
                    conv3x3(N, N), GDN(N), ResidualBlock(N, N), _attention(kind, N, beta, heads)]
            cin = N
        g_a.append(conv3x3(N, M))
        self.g_a = nn.Sequential(*g_a)

        g_s: list[nn.Module] = []
        cin = M
        for kind in dec:
            g_s += [deconv(cin, N, kernel_size=5, stride=2), nn.LeakyReLU(inplace=True),
                    conv3x3(N, N), GDN(N, inverse=True), ResidualBlock(N, N),
                    _attention(kind, N, beta, heads)]
            cin = N
        g_s.append(deconv(N, in_channels, kernel_size=5, stride=2))
        self.g_s = nn.Sequential(*g_s)

        self.h_a = nn.Sequential(
            conv3x3(M, hyper_N), nn.LeakyReLU(inplace=True),
            conv3x3(hyper_N, hyper_N), nn.LeakyReLU(inplace=True),
            conv3x3(hyper_N, hyper_N, stride=2), nn.LeakyReLU(inplace=True),
            conv3x3(hyper_N, hyper_N), nn.LeakyReLU(inplace=True),
            conv3x3(hyper_N, hyper_N, stride=2),
        )
        self.h_s = nn.Sequential(
            conv3x3(hyper_N, M), nn.LeakyReLU(inplace=True),
            subpel_conv3x3(M, M, 2), nn.LeakyReLU(inplace=True),
            conv3x3(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            subpel_conv3x3(M * 3 // 2, M * 3 // 2, 2), nn.LeakyReLU(inplace=True),
            conv3x3(M * 3 // 2, M * 2),
        )
        self.context_prediction = MaskedConv2d(M, 2 * M, kernel_size=5, padding=2, stride=1)
        _start_near_shallow(self.g_a)
        _start_near_shallow(self.g_s)
