"""Source pixels to the 3-band uint8 tiles the models are trained on.

Rules (recorded per source in the dataset's attrs):

* **Bands**: 3 bands are used as they are; 4 or more bands keep the first three (RGB of RGBA /
  RGBN, the sensor's first three of a false-colour composite); 1 band is replicated to 3 (grey)
  and 2 bands become ``[b1, b2, b2]``. Replicating grey matches how the codec codes a 1-band tile
  (its band group repeats the last band), so panchromatic scenes train exactly what they will be
  coded as; dropping them would leave the pan / SAR scenes of the pipeline unseen.
* **16 bit**: each band is stretched linearly from its 0.1 % to its 99.9 % percentile to 0..255
  (clipped, rounded). The percentiles come from a decimated read of the whole scene (GDAL uses the
  overviews when the file has them; at most ``OVERVIEW_PIXELS`` on the long side), over valid
  pixels only, so one pass over a thumbnail fixes the rule for every tile of the scene and
  neighbouring tiles share it. Per band rather than joint: Landsat DN ranges differ by band
  (atmospheric offset of blue), and a joint stretch leaves a strong colour cast.
* **8 bit**: unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.enums import Resampling

from geocompress.geo import SceneInfo

OVERVIEW_PIXELS = 1024
LOW_PCT, HIGH_PCT = 0.1, 99.9


@dataclass(frozen=True)
class Stretch:
    """Per-band linear map ``lo..hi -> 0..255`` (one entry per output band)."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Map source values to 8 bits: ``lo`` -> 0, ``hi`` -> 255, linear, clipped.

        Args:
            x: ``C x H x W`` source pixels, one band per ``lo`` / ``hi`` entry.

        Returns:
            ``C x H x W`` uint8.
        """
        lo = np.asarray(self.lo, dtype=np.float64)[:, None, None]
        hi = np.asarray(self.hi, dtype=np.float64)[:, None, None]
        y = (x.astype(np.float64) - lo) * (255.0 / np.maximum(hi - lo, 1.0))
        return np.clip(np.rint(y), 0, 255).astype(np.uint8)

    def to_dict(self) -> dict:
        """What the dataset's catalog records of the stretch, so tiles can be mapped back to source
        values.

        Returns:
            The rule and the per-band ``lo`` / ``hi``.
        """
        return {"rule": f"per-band {LOW_PCT}-{HIGH_PCT} percentile linear stretch",
                "lo": list(self.lo), "hi": list(self.hi)}


def band_selection(count: int) -> list[int]:
    """1-based source bands that make the 3 output channels (see the module docstring).

    Args:
        count: the source's band count.

    Returns:
        Three 1-based band numbers.
    """
    if count >= 3:
        return [1, 2, 3]
    if count == 2:
        return [1, 2, 2]
    return [1, 1, 1]


def overview_stretch(scene: SceneInfo, bands: list[int]) -> Stretch:
    """Percentile stretch of ``bands`` from a decimated read of the whole scene.

    Args:
        scene: the scene.
        bands: 1-based bands to stretch.

    Returns:
        The stretch.
    """
    f = max(1, int(np.ceil(max(scene.width, scene.height) / OVERVIEW_PIXELS)))
    h, w = max(1, scene.height // f), max(1, scene.width // f)
    files = [rasterio.open(p) for p in scene.paths]
    try:
        band_map = [(ds, b) for ds in files for b in range(1, ds.count + 1)]
        valid = np.zeros((h, w), dtype=bool)
        for ds in files:
            valid |= ds.dataset_mask(out_shape=(h, w), resampling=Resampling.nearest) > 0
        lo, hi = [], []
        for b in bands:
            ds, local = band_map[b - 1]
            v = ds.read(local, out_shape=(h, w), resampling=Resampling.nearest)[valid]
            if v.size == 0:
                v = np.array([0.0, 1.0])
            p = np.percentile(v, [LOW_PCT, HIGH_PCT])
            lo.append(float(p[0]))
            hi.append(float(max(p[1], p[0] + 1)))
    finally:
        for ds in files:
            ds.close()
    return Stretch(tuple(lo), tuple(hi))


def to_rgb8(pixels: np.ndarray, bands: list[int], stretch: Stretch | None) -> np.ndarray:
    """``pixels`` (C x H x W, all source bands) -> 3 x H x W uint8.

    Args:
        pixels: all source bands.
        bands: the three 1-based bands to keep.
        stretch: the scene's stretch; None for 8-bit sources.

    Returns:
        The tile.

    Raises:
        ValueError: pixels that are not 8-bit and no stretch.
    """
    x = pixels[[b - 1 for b in bands]]
    if stretch is not None:
        return stretch.apply(x)
    if x.dtype != np.uint8:
        raise ValueError(f"{x.dtype} pixels need a stretch to become 8-bit")
    return np.ascontiguousarray(x)
