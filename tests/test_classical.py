"""Classical codec anchors (geocompress.evaluation.classical) and Bjøntegaard deltas (.bd). CPU, fast."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from geocompress import metrics as M
from geocompress.evaluation import bd
from geocompress.evaluation import classical as C

REPO = Path(__file__).resolve().parents[1]
CODECS = C.available_codecs()
# a mid-rate parameter for each codec
MID = {"jpeg2000": 1.0, "webp": 60, "avif": 50, "jpegxl": 60, "bpg-hevc": 30}
# three parameters from low to high rate
LADDER = {"jpeg2000": (0.25, 0.5, 1.0), "webp": (10, 50, 90), "avif": (10, 40, 70),
          "jpegxl": (10, 50, 90), "bpg-hevc": (40, 32, 24)}


def _data_root() -> Path:
    env = os.environ.get("GEOCOMPRESS_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def _synthetic(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    base = np.stack([
        128 + 90 * np.sin(x / 17.0) * np.cos(y / 23.0),
        128 + 80 * np.cos((x + y) / 31.0),
        60 + 120 * (x / max(w - 1, 1)),
    ], axis=-1)
    # a few hard edges ("buildings") and mild noise
    for _ in range(6):
        y0, x0 = rng.integers(0, h - h // 4), rng.integers(0, w - w // 4)
        base[y0:y0 + h // 8, x0:x0 + w // 6] = rng.uniform(20, 235, 3)
    base += rng.normal(0, 4, base.shape)
    return np.clip(np.rint(base), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def small() -> np.ndarray:
    return _synthetic(64, 64, seed=1)


@pytest.fixture(scope="module")
def natural() -> np.ndarray:
    """A 256x256 UC Merced tile if the shared data is present, else a synthetic 256x256 image."""
    tiles = sorted((_data_root() / "tiles" / "ucmerced").glob("*/*.png"))
    for p in tiles:
        from PIL import Image

        a = np.asarray(Image.open(p).convert("RGB"))
        if a.shape[:2] == (256, 256):
            return np.ascontiguousarray(a)
    return _synthetic(256, 256, seed=2)


def test_registry_has_the_imagecodecs_anchors():
    for name in ("jpeg2000", "webp", "avif", "jpegxl"):
        assert name in CODECS, f"{name} missing from {CODECS}"
    assert "bpg-hevc" in C.registered_codecs()
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        assert "bpg-hevc" not in CODECS
    with pytest.raises(KeyError):
        C.get_codec("bpg")


@pytest.mark.parametrize("name", CODECS)
def test_roundtrip_rgb_uint8(name, small, natural):
    for img in (small, natural):
        data, dec = C.roundtrip(name, img, MID[name])
        assert isinstance(data, bytes) and len(data) > 0
        assert dec.shape == img.shape and dec.dtype == img.dtype
        assert C.decode(name, data).shape == img.shape
        assert M.psnr(img, dec) > 22.0, (name, M.psnr(img, dec))
        assert M.bpp(data, img.shape[0] * img.shape[1]) == 8 * len(data) / (img.shape[0] * img.shape[1])


@pytest.mark.parametrize("name", CODECS)
def test_bpp_grows_with_quality(name, natural):
    pts = [C._point(name, natural, p, None)[0] for p in LADDER[name]]
    bpps = [p.bpp for p in pts]
    psnrs = [p.psnr for p in pts]
    assert bpps == sorted(bpps) and len(set(bpps)) == 3, (name, bpps)
    assert psnrs == sorted(psnrs), (name, psnrs)


def test_sweep_is_sorted_rdpoints(natural):
    pts = C.sweep("jpeg2000", natural, [1.0, 0.25, 0.5])
    assert [type(p) for p in pts] == [C.RDPoint] * 3
    assert [p.bpp for p in pts] == sorted(p.bpp for p in pts)
    assert all(p.bytes * 8 / 256 / 256 == pytest.approx(p.bpp) for p in pts)
    by_rate = C.sweep("webp", natural, [0.3, 0.8], by="bpp")
    assert len(by_rate) == 2 and by_rate[0].bpp <= 0.3 and by_rate[1].bpp <= 0.8


@pytest.mark.parametrize("target", [0.25, 0.5, 1.0])
def test_jpeg2000_hits_target_bpp(natural, target):
    data, dec = C.encode_at_bpp("jpeg2000", natural, target)
    bpp = M.bpp(data, natural.shape[0] * natural.shape[1])
    assert 0.9 * target <= bpp <= target, bpp
    assert dec.shape == natural.shape and dec.dtype == np.uint8


@pytest.mark.parametrize("name", [n for n in CODECS if n != "jpeg2000"])
def test_encode_at_bpp_lands_under_target(name, small):
    data, dec = C.encode_at_bpp(name, small, 1.5)
    bpp = M.bpp(data, small.shape[0] * small.shape[1])
    assert 0.6 * 1.5 <= bpp <= 1.5, (name, bpp)
    with pytest.raises(ValueError):
        C.encode_at_bpp(name, small, 1e-4)


def test_jpeg2000_uint16_and_grey(natural):
    g16 = (natural[..., :1].astype(np.uint16) * 64 + 7)  # 14-bit-ish content, 1 band
    data, dec = C.encode_at_bpp("jpeg2000", g16, 1.0)
    assert dec.shape == g16.shape and dec.dtype == np.uint16
    assert M.bpp(data, g16.shape[0] * g16.shape[1]) <= 1.0
    assert M.psnr(g16, dec, peak=16383) > 25
    rgb16 = np.ascontiguousarray(natural[:64, :64].astype(np.uint16) * 16)
    data, dec = C.roundtrip("jpeg2000", rgb16, 2.0)  # imagecodecs path (Pillow has no RGB16)
    assert dec.shape == rgb16.shape and dec.dtype == np.uint16
    assert M.bpp(data, rgb16.shape[0] * rgb16.shape[1]) <= 2.0
    assert M.psnr(rgb16, dec, peak=4095) > 25
    g8 = natural[..., 1]  # HxW accepted, same layout back
    _, dec = C.roundtrip("jpeg2000", g8, 1.0)
    assert dec.shape == g8.shape and dec.dtype == np.uint8


def test_support_matrix(small):
    u16 = small.astype(np.uint16) * 16  # 12-bit values
    grey = small[..., :1]
    if "jpegxl" in CODECS:
        for img in (u16, u16[..., :1], grey):
            _, dec = C.roundtrip("jpegxl", img, 80)
            assert dec.shape == img.shape and dec.dtype == img.dtype
    if "avif" in CODECS:
        _, dec = C.roundtrip("avif", u16, 60)
        assert dec.dtype == np.uint16 and M.psnr(u16, dec, peak=4095) > 25
        with pytest.raises(C.UnsupportedInput):
            C.encode("avif", u16 * 16, 60)  # > 12 bits
        _, dec = C.roundtrip("avif", grey, 60)
        assert dec.shape == grey.shape
    if "webp" in CODECS:
        with pytest.raises(C.UnsupportedInput):
            C.encode("webp", u16, 60)
        data, dec = C.roundtrip("webp", grey, 80)
        assert dec.shape == grey.shape and M.psnr(grey, dec) > 25
        assert C.decode("webp", data).shape[2] == 3 and C.decode("webp", data, bands=1).shape == grey.shape
    if "bpg-hevc" in CODECS:
        with pytest.raises(C.UnsupportedInput):
            C.encode("bpg-hevc", u16, 30)
        _, dec = C.roundtrip("bpg-hevc", grey, 30)
        assert dec.shape == grey.shape and M.psnr(grey, dec) > 25
    for name in CODECS:
        with pytest.raises(C.UnsupportedInput):
            C.encode(name, small.astype(np.float32), MID[name])
        with pytest.raises(C.UnsupportedInput):
            C.encode(name, np.zeros((16, 16, 4), np.uint8), MID[name])


@pytest.mark.skipif("bpg-hevc" not in CODECS, reason="pillow-heif with x265 not installed")
def test_bpg_hevc_qp_semantics(small):
    lo_q = C.encode("bpg-hevc", small, 40)
    hi_q = C.encode("bpg-hevc", small, 20)
    assert len(hi_q) > len(lo_q)  # lower QP -> more bits, as bpgenc -q
    assert 0 < C.hevc_payload_bytes(lo_q) < len(lo_q)
    c444 = C.encode("bpg-hevc", small, 30, chroma=444)
    assert C.decode("bpg-hevc", c444).shape == small.shape


# ------------------------------------------------------------------------------ Bjøntegaard

RATES = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
PSNRS = np.array([26.0, 29.2, 31.9, 34.3, 36.4])
BACKENDS = ["native"] + (["bjontegaard"] if bd._bjontegaard_module() is not None else [])


def test_rd_front_drops_dominated_points_so_bd_still_works():
    # shipped qualities where q4 costs more bits than q3 for less PSNR (an under-trained quality)
    rates, psnrs = [0.075, 0.135, 0.192, 0.248], [21.99, 22.01, 24.21, 23.91]
    with pytest.raises(ValueError, match="strictly increasing"):
        bd.bd_rate(2 * np.array(rates), psnrs, rates, psnrs)
    front = bd.rd_front(rates, psnrs)
    assert front == [0, 1, 2]
    fr, fq = np.array(rates)[front], np.array(psnrs)[front]
    assert bd.bd_rate(2 * fr, fq, fr, fq) == pytest.approx(-50.0, abs=1e-6)
    assert bd.rd_front(RATES[::-1], PSNRS[::-1]) == [4, 3, 2, 1, 0]  # order-free, nothing dropped


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", bd.METHODS)
def test_bd_identities(method, backend):
    assert bd.bd_rate(RATES, PSNRS, RATES, PSNRS, method, backend) == pytest.approx(0.0, abs=1e-9)
    assert bd.bd_psnr(RATES, PSNRS, RATES, PSNRS, method, backend) == pytest.approx(0.0, abs=1e-9)
    # same PSNR with 10 % fewer bits everywhere: exactly -10 %
    assert bd.bd_rate(RATES, PSNRS, 0.9 * RATES, PSNRS, method, backend) == pytest.approx(-10.0, abs=1e-6)
    assert bd.bd_rate(RATES, PSNRS, 2.0 * RATES, PSNRS, method, backend) == pytest.approx(100.0, abs=1e-6)
    # constant +0.5 dB at every rate
    assert bd.bd_psnr(RATES, PSNRS, RATES, PSNRS + 0.5, method, backend) == pytest.approx(0.5, abs=1e-9)
    # order of the points does not matter
    perm = [3, 0, 4, 2, 1]
    assert bd.bd_rate(RATES[perm], PSNRS[perm], 0.9 * RATES, PSNRS, method, backend) == pytest.approx(-10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert math.isnan(bd.bd_rate(RATES, PSNRS, RATES, PSNRS + 50, method, backend))


# JCTVC-E137 BD-rate worked examples (piecewise cubic, as in the JCT-VC Excel sheet), as used
# in Netflix/vmaf python/test/bd_rate_calculator_test.py (BDrateCalculatorJCTVCTest):
# expected -0.00465215420752807 and -0.018779823450567612 (fractions).
JCTVC = [
    ([(108048.8736, 43.6471), (61279.976, 40.3953), (33905.6656, 37.247), (18883.6928, 34.2911)],
     [(108061.2784, 43.6768), (61299.9936, 40.4232), (33928.7472, 37.2761), (18910.912, 34.3147)],
     -0.465215420752807),
    ([(40433.8848, 37.5761), (7622.7456, 35.3756), (2394.488, 33.8977), (1017.6184, 32.0603)],
     [(40370.12, 37.5982), (7587.0024, 35.4025), (2390.0944, 33.9194), (1017.0984, 32.0822)],
     -1.8779823450567612),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("anchor,test,expected", JCTVC)
def test_bd_rate_jctvc_worked_values(anchor, test, expected, backend):
    ra, qa = zip(*anchor)
    rt, qt = zip(*test)
    assert bd.bd_rate(ra, qa, rt, qt, "pchip", backend) == pytest.approx(expected, abs=5e-4)


def test_backends_agree_on_bjontegaard_readme_example():
    # test data from the bjontegaard package README (x265 presets, FAU-LMS/bjontegaard)
    ra = [9487.76, 4593.60, 2486.44, 1358.24]
    qa = [40.037, 38.615, 36.845, 34.851]
    rt = [9787.80, 4469.00, 2451.52, 1356.24]
    qt = [40.121, 38.651, 36.970, 34.987]
    for m in bd.METHODS:
        r = bd.bd_rate(ra, qa, rt, qt, m, "native")
        p = bd.bd_psnr(ra, qa, rt, qt, m, "native")
        assert -5.0 < r < -4.0 and 0.1 < p < 0.13, (m, r, p)
        if "bjontegaard" in BACKENDS:
            assert bd.bd_rate(ra, qa, rt, qt, m, "bjontegaard") == pytest.approx(r, abs=1e-9)
            assert bd.bd_psnr(ra, qa, rt, qt, m, "bjontegaard") == pytest.approx(p, abs=1e-9)


def test_cubic_vceg_m33_matches_direct_polyfit():
    # VCEG-M33: fit PSNR = cubic(ln R) per curve, integrate over the common log-rate interval
    rt, qt = RATES * 1.3, PSNRS + np.array([0.1, 0.3, 0.2, 0.4, 0.1])
    la, lt = np.log(RATES), np.log(rt)
    pa, pt = np.polyint(np.polyfit(la, PSNRS, 3)), np.polyint(np.polyfit(lt, qt, 3))
    lo, hi = max(la.min(), lt.min()), min(la.max(), lt.max())
    expect = ((np.polyval(pt, hi) - np.polyval(pt, lo)) - (np.polyval(pa, hi) - np.polyval(pa, lo))) / (hi - lo)
    assert bd.bd_psnr(RATES, PSNRS, rt, qt, "cubic", "native") == pytest.approx(expect, abs=1e-9)
    qa_ = np.polyint(np.polyfit(PSNRS, la, 3))
    qt_ = np.polyint(np.polyfit(qt, lt, 3))
    lo, hi = max(PSNRS.min(), qt.min()), min(PSNRS.max(), qt.max())
    avg = ((np.polyval(qt_, hi) - np.polyval(qt_, lo)) - (np.polyval(qa_, hi) - np.polyval(qa_, lo))) / (hi - lo)
    assert bd.bd_rate(RATES, PSNRS, rt, qt, "cubic", "native") == pytest.approx((math.exp(avg) - 1) * 100, abs=1e-9)


def test_interp_psnr_at_rate():
    assert bd.interp_psnr_at_rate(RATES, PSNRS, 0.4) == pytest.approx(31.9)
    mid = bd.interp_psnr_at_rate(RATES, PSNRS, 0.3)
    assert 29.2 < mid < 31.9
    lin = bd.interp_psnr_at_rate(RATES, PSNRS, math.sqrt(0.2 * 0.4), method="linear")
    assert lin == pytest.approx((29.2 + 31.9) / 2)  # midpoint in log-rate
    assert math.isnan(bd.interp_psnr_at_rate(RATES, PSNRS, 5.0))
    assert not math.isnan(bd.interp_psnr_at_rate(RATES, PSNRS, 5.0, extrapolate=True))
    arr = bd.interp_psnr_at_rate(RATES, PSNRS, [0.1, 1.6])
    assert np.allclose(arr, [26.0, 36.4])
    assert bd.interp_rate_at_psnr(RATES, PSNRS, 31.9) == pytest.approx(0.4)
