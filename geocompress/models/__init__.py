"""Architectures only: MGSSNet and its blocks, and CompressAI's baselines, behind one registry.

Submodules load on first use (PEP 562), so ``geocompress.models.arch_names`` costs no torch import.
"""

from geocompress._lazy import lazy_attributes

__all__ = ["LGCM", "MHGAM", "SSIFAM", "MGSSNet", "MGSSNetVR", "MODULE_SETS", "ARCHITECTURES", "build", "names"]

_LAZY = {"LGCM": ".blocks", "MHGAM": ".blocks", "SSIFAM": ".blocks", "MGSSNet": ".mgssnet", "MGSSNetVR": ".variable_rate",
         "MODULE_SETS": ".mgssnet", "ARCHITECTURES": ".registry", "build": ".registry",
         "names": ".registry"}


__getattr__ = lazy_attributes(__name__, _LAZY)
