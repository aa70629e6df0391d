"""Source checksums: identify exactly which bytes a store was made from.

sha256 over the raw file bytes, streamed in 1 MiB blocks (memory stays flat
whatever the file size). For a multi-file band stack the digest covers the
files' bytes concatenated in band order. This is a *file* identity: re-saving
identical pixels with another compression gives another checksum, which is
what "resume only onto the same source" wants.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

BLOCK = 1 << 20


def sha256_files(paths: Iterable[Path]) -> str:
    """Hex sha256 of the concatenated bytes of ``paths`` (in order).

    Args:
        paths: the scene's files (one, or a band stack in band order).

    Returns:
        The hex digest that identifies a source, so a resumed run refuses another one.
    """
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(BLOCK), b""):
                h.update(block)
    return h.hexdigest()
