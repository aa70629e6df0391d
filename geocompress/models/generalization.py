"""The paper's generalization experiment (Shi et al. 2024, III-F(5), Fig. 14): each MGSSNet block
inside the factorized-prior ReLU baseline of Ballé et al. (CompressAI's ``FactorizedPriorReLU``).

Placement mirrors MGSSNet's own (:mod:`.mgssnet`): SSIF-AM, a local block, goes after every ReLU of
the analysis and synthesis transforms (encoder stages 1-3, decoder stages 1-3); MHG-AM and LGCM,
global blocks whose attention is quadratic in the number of positions, go only where MGSSNet puts
them, at the coarsest hidden scale (after the encoder's 3rd stage and the decoder's 1st). The
entropy model and coding path stay the baseline's, so any gain is the transform's.
"""

from __future__ import annotations

from compressai.models import FactorizedPriorReLU
from compressai.models.utils import conv, deconv
from torch import nn

from .mgssnet import _attention

GENERALIZATION_MODULES = ("ssif", "mhg", "lgcm")


def _blocks(module: str) -> list[str | None]:
    """Block after encoder stages 1-3 (the decoder mirrors it)."""
    if module == "ssif":
        return ["ssif", "ssif", "ssif"]
    if module in ("mhg", "lgcm"):
        return [None, None, module]
    raise ValueError(f"module must be one of {GENERALIZATION_MODULES}, got {module!r}")


class FactorizedReLUWithBlock(FactorizedPriorReLU):
    """``FactorizedPriorReLU`` with one of MGSSNet's blocks in both transforms.

    Shi et al. 2024, III-F(5), on Ballé et al., "Variational image compression with a scale
    hyperprior" (ICLR 2018)'s factorized-prior ReLU model.

    Args:
        N: channels of the hidden stages.
        M: latent channels.
        module: which block, one of ``GENERALIZATION_MODULES``.
        beta: LGCM's weight of the global branch.
        heads: MHG-AM's and LGCM's attention heads.
        **kwargs: passed to ``FactorizedPriorReLU``.

    Raises:
        ValueError: an unknown ``module``.
    """

    def __init__(self, N: int = 128, M: int = 192, module: str = "ssif", beta: float = 0.1,
                 heads: int = 4, **kwargs) -> None:
        super().__init__(N=N, M=M, **kwargs)
        enc = _blocks(module)
        dec = enc[::-1]  # decoder stage 1 works at encoder stage 3's scale

        def att(kind: str | None) -> nn.Module:
            return _attention(kind, N, beta, heads)

        self.g_a = nn.Sequential(
            conv(3, N), nn.ReLU(inplace=True), att(enc[0]),
            conv(N, N), nn.ReLU(inplace=True), att(enc[1]),
            conv(N, N), nn.ReLU(inplace=True), att(enc[2]),
            conv(N, M),
        )
        self.g_s = nn.Sequential(
            deconv(M, N), nn.ReLU(inplace=True), att(dec[0]),
            deconv(N, N), nn.ReLU(inplace=True), att(dec[1]),
            deconv(N, N), nn.ReLU(inplace=True), att(dec[2]),
            deconv(N, 3),
        )
