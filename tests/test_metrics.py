import math

import numpy as np
import pytest

from geocompress import metrics


def test_fixed_peak_psnr_matches_hand_computation():
    x = np.zeros((3, 4, 4), np.uint8)
    y = x.copy()
    y[0, 0, 0] = 10  # MSE = 100 / 48
    assert metrics.psnr(x, y) == pytest.approx(10 * math.log10(255 ** 2 / (100 / 48)))
    assert metrics.psnr(x, x) == math.inf
    x16 = np.zeros((1, 2, 2), np.uint16)
    y16 = x16 + 1
    assert metrics.psnr(x16, y16, peak=4095) == pytest.approx(20 * math.log10(4095))


def test_paper_psnr_uses_each_bands_own_peak():
    x = np.stack([np.full((2, 2), 100, np.uint8), np.full((2, 2), 200, np.uint8)])
    y = x.copy()
    y[:, 0, 0] += 2  # per-band MSE = 1
    expected = (10 * math.log10(100 ** 2) + 10 * math.log10(200 ** 2)) / 2
    assert metrics.psnr_paper(x, y) == pytest.approx(expected)


def test_ms_ssim_and_its_db_form():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 192, 192), dtype=np.uint8)
    assert metrics.ms_ssim(x, x) == pytest.approx(1.0)
    assert metrics.ms_ssim_db(x, x) == math.inf
    y = np.clip(x.astype(int) + rng.integers(-20, 21, x.shape), 0, 255).astype(np.uint8)
    v = metrics.ms_ssim(x, y)
    assert 0 < v < 1
    assert metrics.ms_ssim_db(x, y) == pytest.approx(-10 * math.log10(1 - v))
    assert metrics.to_db(0.99) == pytest.approx(20.0)


def test_bpp_counts_every_byte():
    assert metrics.bpp([b"x" * 100, b"y" * 28], 256) == pytest.approx(4.0)
    assert metrics.bpp(b"x" * 32, 256) == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.psnr(np.zeros((3, 4, 4)), np.zeros((3, 4, 5)))
