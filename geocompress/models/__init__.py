"""Architectures only: MGSSNet and its blocks, and CompressAI's baselines, behind one registry.

Submodules load on first use (PEP 562), so ``geocompress.models.arch_names`` costs no torch import.
"""

__all__ = ["LGCM", "MHGAM", "SSIFAM", "MGSSNet", "MODULE_SETS", "ARCHITECTURES", "build", "names"]

_LAZY = {"LGCM": ".blocks", "MHGAM": ".blocks", "SSIFAM": ".blocks", "MGSSNet": ".mgssnet",
         "MODULE_SETS": ".mgssnet", "ARCHITECTURES": ".registry", "build": ".registry",
         "names": ".registry"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(name)
