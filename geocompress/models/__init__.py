"""Architectures only: MGSSNet and its blocks, and CompressAI's baselines, behind one registry."""

from .blocks import LGCM, MHGAM, SSIFAM
from .mgssnet import MODULE_SETS, MGSSNet
from .registry import ARCHITECTURES, build, names

__all__ = ["LGCM", "MHGAM", "SSIFAM", "MGSSNet", "MODULE_SETS", "ARCHITECTURES", "build", "names"]
