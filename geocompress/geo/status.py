"""Per-tile status codes, stored as uint8 in the Zarr ``status`` array.

Values are part of the on-disk format: never renumber, only append.
"""

from __future__ import annotations

from enum import IntEnum


class TileStatus(IntEnum):
    """What happened to a tile. PENDING (0) is the array fill value, so a
    freshly created or interrupted store reads as "still to do"."""

    PENDING = 0
    WRITTEN = 1
    DROPPED_NODATA = 2
    DROPPED_CONSTANT = 3

    @property
    def is_final(self) -> bool:
        """Whether the tile is done (written or dropped): only PENDING tiles are redone on resume."""
        return self is not TileStatus.PENDING
