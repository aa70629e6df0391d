"""Rate and distortion as the paper reports them.

* ``bpp``: every byte of every string (headers and checksums included) per pixel of the tile.
* ``psnr_paper``: eq. (10), the mean over bands of ``10 log10(max(X_i)^2 / MSE_i)`` where the peak
  is that band's largest value in the original.
* ``psnr``: the usual fixed-peak PSNR over all bands (peak 255 for 8 bits, ``2**bits - 1``).
* ``ms_ssim`` / ``ms_ssim_db``: MS-SSIM from ``pytorch_msssim`` (a maintained implementation of
  Wang et al. 2003) on images scaled to [0, 1] and ``-10 log10(1 - MS-SSIM)`` (eq. 11).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def bpp(strings: Iterable[bytes] | bytes, pixels: int) -> float:
    total = len(strings) if isinstance(strings, (bytes, bytearray)) else sum(len(s) for s in strings)
    return 8.0 * total / pixels


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if x.ndim == 2:
        x, y = x[None], y[None]
    return x.astype(np.float64), y.astype(np.float64)


def peak_for(dtype: np.dtype, bits: int | None = None) -> float:
    return float(2 ** (bits if bits is not None else 8 * np.dtype(dtype).itemsize) - 1)


def psnr(x: np.ndarray, y: np.ndarray, peak: float | None = None) -> float:
    """Fixed-peak PSNR in dB over all bands of C x H x W images (inf when identical)."""
    peak = peak_for(np.asarray(x).dtype) if peak is None else peak
    a, b = _pair(x, y)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def psnr_paper(x: np.ndarray, y: np.ndarray) -> float:
    """Eq. (10): per-band PSNR with that band's own maximum as peak, averaged over bands. A band
    whose maximum is 0 (all black) takes one level as its peak: eq. (10) is undefined there."""
    a, b = _pair(x, y)
    values = []
    for xa, xb in zip(a, b):
        mse = float(np.mean((xa - xb) ** 2))
        peak = max(float(xa.max()), 1.0)
        values.append(math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse))
    return float(np.mean(values))


def ms_ssim(x: np.ndarray, y: np.ndarray, peak: float | None = None) -> float:
    """MS-SSIM (5 scales, Gaussian window 11) of C x H x W images; needs H, W > 160."""
    import torch  # here, not at import: the CLI reads the rate and dB helpers without torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    peak = peak_for(np.asarray(x).dtype) if peak is None else peak
    a, b = _pair(x, y)
    ta = torch.from_numpy(a / peak)[None]
    tb = torch.from_numpy(b / peak)[None]
    return float(_ms_ssim(ta, tb, data_range=1.0, size_average=True))


def ms_ssim_db(x: np.ndarray, y: np.ndarray, peak: float | None = None) -> float:
    """Eq. (11): ``-10 log10(1 - MS-SSIM)``."""
    v = ms_ssim(x, y, peak)
    return math.inf if v >= 1 else -10 * math.log10(1 - v)


def to_db(ms_ssim_value: float) -> float:
    return math.inf if ms_ssim_value >= 1 else -10 * math.log10(1 - ms_ssim_value)
