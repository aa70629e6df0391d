"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

The one way the package replaces a file it owns: write a temporary file beside the target, then
``os.replace`` it over the target (atomic on one file system). A leaf module: it imports nothing of
``geocompress``, so every layer (codec, training, ...) can use it without importing upwards, and
torch is imported only by :func:`atomic_save`.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "atomic_save"]


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path to write instead of ``path``; it replaces ``path`` when the block ends.

    Why: a training state, checkpoint or pack that is being rewritten must never be seen (or left
    by a kill) half-written; the resumable trainer in particular rereads its own state.

    Args:
        path: the file to (re)write.
        suffix: appended to ``path``'s name to name the temporary file, which sits in the same
            folder (``os.replace`` is only atomic within one file system). Writers that pick the
            format by extension need it to end in that extension (``".tmp.npz"``, ``".tmp.png"``).

    Yields:
        The temporary path. When the block raises, the target is left untouched (and the
        temporary file, if any, stays behind).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "note.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    yield tmp
    os.replace(tmp, path)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically (through ``PATH.tmp``, see :func:`atomic_path`).

    Args:
        obj: anything ``torch.save`` writes (a checkpoint or training-state dict).
        path: the file to (re)write.
    """
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
