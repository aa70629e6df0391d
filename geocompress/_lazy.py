"""Package attributes loaded from their submodule on first use (PEP 562): cheap package imports."""

from __future__ import annotations

import gc
import importlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``where[name]`` (relative to ``package``) on use."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block, then back as it was.

    Around a large import (torch and CompressAI: ~200 000 objects): the collections that its
    allocations trigger scan everything imported so far and free next to nothing, ~0.2 s of every
    process that loads the codec (issue 38). Garbage made in the block is collected afterwards.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
