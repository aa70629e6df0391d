"""Decide which tiles are worth encoding.

Border detection is keyed on *validity* -- the dataset mask (nodata across all
bands, alpha band, internal/sidecar mask) plus "outside the scene" -- never on
pixel darkness: dark water, shadow, or even all-zero pixels in a raster
without nodata/mask are real data and are kept.

Rules (in order):

1. no valid pixel at all                         -> DROPPED_NODATA
2. valid fraction < ``min_valid_fraction``        -> DROPPED_NODATA
3. ``drop_constant`` and every band's valid pixels
   take a single value                            -> DROPPED_CONSTANT
4. otherwise                                      -> keep (WRITTEN once stored)

The valid fraction is ``valid.sum() / in_scene`` where ``in_scene`` defaults to
the tile area; pass the number of tile pixels inside the scene (see
``TileGrid.in_scene_pixels``) so a thin edge tile is not dropped merely for
being mostly outside the scene. A dropped constant tile loses nothing if the
caller records :func:`constant_value` (the store has a ``constant`` array).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from geocompress.geo.status import TileStatus

REASON_OK = "ok"
REASON_NODATA = "nodata"
REASON_CONSTANT = "constant"

_STATUS = {
    REASON_OK: TileStatus.WRITTEN,
    REASON_NODATA: TileStatus.DROPPED_NODATA,
    REASON_CONSTANT: TileStatus.DROPPED_CONSTANT,
}


class Decision(NamedTuple):
    """``(keep, reason)``; ``reason`` is one of "ok", "nodata", "constant"."""

    keep: bool
    reason: str

    @property
    def status(self) -> TileStatus:
        """Status to store for this tile (WRITTEN for kept tiles)."""
        return _STATUS[self.reason]


def constant_value(pixels: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """Per-band value if every band is constant over the valid pixels, else None.

    Args:
        pixels: ``C x H x W``.
        valid: ``H x W`` booleans.

    Returns:
        ``C`` values, or None (also when nothing is valid).
    """
    if not valid.any():
        return None
    vals = pixels[:, valid]  # (C, n_valid)
    first = vals[:, :1]
    if np.array_equal(vals, np.broadcast_to(first, vals.shape)):
        return first[:, 0].copy()
    return None


@dataclass(frozen=True)
class TileFilter:
    """Configurable keep/drop rule (see module docstring for the exact rules)."""

    min_valid_fraction: float = 0.0
    drop_constant: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_valid_fraction <= 1.0:
            raise ValueError(f"min_valid_fraction must be in [0, 1], got {self.min_valid_fraction}")

    def decide(self, pixels: np.ndarray, valid: np.ndarray, in_scene: int | None = None) -> Decision:
        """Keep or drop one tile. ``pixels`` is (C, H, W), ``valid`` (H, W) bool.

        Args:
            pixels: the tile.
            valid: its validity mask.
            in_scene: pixels of the tile inside the scene (edge tiles are judged on those only).

        Returns:
            ``(keep, reason)``.

        Raises:
            ValueError: shapes that do not match.
        """
        if pixels.ndim != 3 or valid.shape != pixels.shape[1:]:
            raise ValueError(f"expected pixels (C,H,W) and valid (H,W), got {pixels.shape} / {valid.shape}")
        n_valid = int(np.count_nonzero(valid))
        if n_valid == 0:
            return Decision(False, REASON_NODATA)
        denom = in_scene if in_scene else valid.size
        if n_valid / denom < self.min_valid_fraction:
            return Decision(False, REASON_NODATA)
        if self.drop_constant and constant_value(pixels, valid) is not None:
            return Decision(False, REASON_CONSTANT)
        return Decision(True, REASON_OK)


__all__ = ["Decision", "TileFilter", "TileStatus", "constant_value"]
