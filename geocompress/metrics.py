"""Rate and distortion as the paper reports them.

* ``bpp``: every byte of every string (headers and checksums included) per pixel of the tile.
  The one rate function of the package: the classical codecs' files, the learned codec's strings
  and the evaluation's records all count through it.
* ``psnr_paper``: eq. (10), the mean over bands of ``10 log10(max(X_i)^2 / MSE_i)`` where the peak
  is that band's largest value in the original.
* ``psnr``: the usual fixed-peak PSNR over all bands (peak 255 for 8 bits, ``2**bits - 1``). The
  one fixed-peak PSNR of the package (the classical codecs use it too).
* ``ms_ssim`` / ``ms_ssim_db``: MS-SSIM from ``pytorch_msssim`` (a maintained implementation of
  Wang et al. 2003) on images scaled to [0, 1] and ``-10 log10(1 - MS-SSIM)`` (eq. 11).
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np


def bpp(strings: Iterable[bytes] | bytes | int, pixels: int) -> float:
    """Bits per pixel of coded data: every byte counted, headers, containers and checksums too.

    The paper's rate and the one a user pays for storage are the whole file or string, so nothing
    is left out; comparing codecs on payload alone would favour those with heavy containers.

    Args:
        strings: one file or string (``bytes``), several (an iterable of ``bytes``, e.g. a
            multi-string tile), or an already counted number of bytes (``int``).
        pixels: pixels the data codes, ``H * W`` of one band: bands are not counted, so RGB and
            single-band images are rated alike, as the paper does.

    Returns:
        ``8 * bytes / pixels``.
    """
    if isinstance(strings, (int, np.integer)):
        total = strings
    elif isinstance(strings, (bytes, bytearray)):
        total = len(strings)
    else:
        total = sum(len(s) for s in strings)
    return 8.0 * total / pixels


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} vs {y.shape}")
    if x.ndim == 2:
        x, y = x[None], y[None]
    return x.astype(np.float64), y.astype(np.float64)


def peak_for(dtype: np.dtype, bits: int | None = None) -> float:
    """The largest value a sample of ``dtype`` (or of ``bits`` significant bits) can take: the
    fixed PSNR peak and the scale MS-SSIM divides by.

    Args:
        dtype: the images' dtype; its full range is used when ``bits`` is None.
        bits: significant bits, for imagery stored in a wider dtype (12-bit sensors in uint16),
            so the peak is the sensor's range, not the container's.

    Returns:
        ``2**bits - 1`` (``bits`` defaults to ``8 * itemsize``: 255 for uint8, 65535 for uint16).
    """
    return float(2 ** (bits if bits is not None else 8 * np.dtype(dtype).itemsize) - 1)


def psnr(x: np.ndarray, y: np.ndarray, peak: float | None = None) -> float:
    """Fixed-peak PSNR in dB over all pixels and bands (``inf`` when the images are identical).

    One mean squared error over every sample, so a band coded badly is not hidden by averaging
    per-band dB values (that is :func:`psnr_paper`'s eq. 10, which the paper reports beside it).
    The layout does not matter (C x H x W, H x W x C or H x W): only the samples are compared.

    Args:
        x: the original image (any shape; its dtype sets the default peak).
        y: the reconstruction, of ``x``'s shape.
        peak: the largest value a sample can take. Default (``None``): the full range of ``x``'s
            dtype, ``2**(8 * itemsize) - 1`` (255 for uint8, 65535 for uint16). Pass
            ``2**bits - 1`` for imagery with fewer significant bits (e.g. 4095 for 12-bit
            sensors in uint16), or the PSNR is inflated by the unused range.

    Returns:
        ``10 log10(peak^2 / MSE)`` in dB.

    Raises:
        ValueError: ``x`` and ``y`` differ in shape (a silent broadcast would compare the wrong
            pixels).
    """
    peak = peak_for(np.asarray(x).dtype) if peak is None else peak
    a, b = _pair(x, y)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def psnr_paper(x: np.ndarray, y: np.ndarray) -> float:
    """Eq. (10) of the paper: per-band PSNR with that band's own maximum as peak, averaged over bands.

    The paper's tables use it, so reproducing them needs it; it favours images whose bands do
    not reach the dtype's range less than a fixed peak would. A band whose maximum is 0 (all
    black) takes one level as its peak: eq. (10) is undefined there.

    Args:
        x: the original, C x H x W (or H x W, one band).
        y: the reconstruction, of ``x``'s shape.

    Returns:
        The mean over bands of ``10 log10(max(x_band)^2 / MSE_band)`` in dB; ``inf`` when
        identical.

    Raises:
        ValueError: ``x`` and ``y`` differ in shape.
    """
    a, b = _pair(x, y)
    values = []
    for xa, xb in zip(a, b):
        mse = float(np.mean((xa - xb) ** 2))
        peak = max(float(xa.max()), 1.0)
        values.append(math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse))
    return float(np.mean(values))


def ms_ssim(x: np.ndarray, y: np.ndarray, peak: float | None = None) -> float:
    """MS-SSIM (5 scales, Gaussian window 11, ``pytorch_msssim``) of C x H x W images.

    The paper's second quality measure; a maintained implementation rather than our own so the
    figures compare with others'. Images are scaled to [0, 1] by ``peak`` first.

    Args:
        x: the original, C x H x W; H and W must exceed 160 (five scales of an 11-tap window).
        y: the reconstruction, of ``x``'s shape.
        peak: the scale of the samples; default (``None``): :func:`peak_for` of ``x``'s dtype.

    Returns:
        MS-SSIM in [0, 1] (1: identical).

    Raises:
        ValueError: ``x`` and ``y`` differ in shape.
    """
    import torch  # here, not at import: the CLI reads the rate and dB helpers without torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    peak = peak_for(np.asarray(x).dtype) if peak is None else peak
    a, b = _pair(x, y)
    ta = torch.from_numpy(a / peak)[None]
    tb = torch.from_numpy(b / peak)[None]
    return float(_ms_ssim(ta, tb, data_range=1.0, size_average=True))


def ms_ssim_db(x: np.ndarray, y: np.ndarray, peak: float | None = None) -> float:
    """Eq. (11): MS-SSIM in dB, ``-10 log10(1 - MS-SSIM)``, which spreads the values near 1 where
    codecs differ.

    Args:
        x: the original, C x H x W (H, W > 160).
        y: the reconstruction, of ``x``'s shape.
        peak: as for :func:`ms_ssim`.

    Returns:
        dB; ``inf`` when MS-SSIM is 1.

    Raises:
        ValueError: ``x`` and ``y`` differ in shape.
    """
    return to_db(ms_ssim(x, y, peak))


def to_db(ms_ssim_value: float) -> float:
    """An MS-SSIM value in dB (eq. 11), for values already measured: averages are converted after
    averaging, as CompressAI's plots do.

    Args:
        ms_ssim_value: MS-SSIM in [0, 1].

    Returns:
        ``-10 log10(1 - ms_ssim_value)``; ``inf`` at 1.
    """
    return math.inf if ms_ssim_value >= 1 else -10 * math.log10(1 - ms_ssim_value)
