"""Bjøntegaard delta rate / PSNR and equal-rate PSNR interpolation.

Methods (``method=``):

* ``"pchip"`` (default) -- piecewise cubic Hermite interpolation in the log-rate domain, as in the
  JCT-VC / JVET common-test-condition Excel sheets (JCTVC-L1100, JVET-T2010) and the ``bjontegaard``
  package (FAU-LMS), which reports agreement with the JVET sheet to 10 decimals.
* ``"cubic"`` -- the original VCEG-M33 method (G. Bjøntegaard, "Calculation of average PSNR
  differences between RD-curves", VCEG-M33, 2001): one least-squares cubic polynomial per curve.
* ``"akima"`` -- Akima interpolation (Herglotz et al., ICIP 2022).

Backend: the maintained ``bjontegaard`` package (PyPI, BSD-3) is used when installed
(``backend="auto"``); otherwise an equivalent scipy/numpy implementation in this module
(``backend="native"``). Both are checked against each other and against the JCTVC-E137 worked values
in ``tests/test_classical.py``.

Conventions: rates in any unit (bpp here), PSNR in dB, points in any order. ``bd_rate`` < 0 means
the test codec needs fewer bits than the anchor for the same PSNR; ``bd_psnr`` > 0 means the test
codec has higher PSNR at the same rate. The average is taken over the overlap of the two curves
(PSNR overlap for BD-rate, log-rate overlap for BD-PSNR); no overlap -> ``nan`` with a warning.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

__all__ = ["bd_rate", "bd_psnr", "interp_psnr_at_rate", "interp_rate_at_psnr", "rd_front", "METHODS"]

METHODS = ("pchip", "cubic", "akima")

_ArrayLike = Sequence[float] | np.ndarray


def _bjontegaard_module():
    try:
        import bjontegaard  # type: ignore

        return bjontegaard
    except Exception:  # pragma: no cover - depends on the environment
        return None


def _prep(rate: _ArrayLike, psnr: _ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(rate, dtype=np.float64).ravel()
    q = np.asarray(psnr, dtype=np.float64).ravel()
    if r.shape != q.shape:
        raise ValueError(f"{name}: {r.size} rates but {q.size} PSNR values")
    if r.size < 2:
        raise ValueError(f"{name}: need at least 2 RD points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(q))):
        raise ValueError(f"{name}: rates and PSNRs must be finite")
    if np.any(r <= 0):
        raise ValueError(f"{name}: rates must be > 0")
    order = np.argsort(r, kind="stable")
    return r[order], q[order]


def _check_monotone(x: np.ndarray, what: str) -> None:
    if np.any(np.diff(x) <= 0):
        raise ValueError(
            f"{what} must be strictly increasing along the RD curve for piecewise interpolation "
            f"(got {np.round(x, 4).tolist()}); drop non-monotone points or use method='cubic'"
        )


def rd_front(rates: _ArrayLike, psnrs: _ArrayLike) -> list[int]:
    """Indices of the points on the RD front: sorted by rate, each of higher quality than every
    cheaper point.

    A dominated point (more bits, no better) has no place on a BD curve; report it apart instead
    of letting the interpolation fail or fold back (``rd.curve`` filters with it).

    Args:
        rates: the points' rates, any order.
        psnrs: their quality.

    Returns:
        Indices into ``rates`` of the kept points, by increasing rate.
    """
    r, q = np.asarray(rates, dtype=float), np.asarray(psnrs, dtype=float)
    keep: list[int] = []
    for i in np.argsort(r, kind="stable"):
        if not keep or (q[i] > q[keep[-1]] and r[i] > r[keep[-1]]):
            keep.append(int(i))
    return keep


class _Cubic:
    def __init__(self, x: np.ndarray, y: np.ndarray):
        deg = min(3, x.size - 1)
        self.p = np.polyfit(x, y, deg)
        self.P = np.polyint(self.p)

    def __call__(self, x):
        return np.polyval(self.p, x)

    def integrate(self, a: float, b: float) -> float:
        return float(np.polyval(self.P, b) - np.polyval(self.P, a))


def _interpolator(x: np.ndarray, y: np.ndarray, method: str):
    import scipy.interpolate as si

    if method == "cubic":
        return _Cubic(x, y)
    _check_monotone(x, "the abscissa (PSNR for BD-rate, log-rate for BD-PSNR)")
    if method == "pchip":
        return si.PchipInterpolator(x, y)
    if method == "akima":
        if x.size > 2:
            return si.Akima1DInterpolator(x, y)
        return si.make_interp_spline(x, y, k=1)
    raise ValueError(f"unknown method {method!r}; use one of {METHODS}")


def _bd_native(xa, ya, xt, yt, method: str) -> float:
    """Average of (f_test - f_anchor) over the overlap of the x ranges."""
    lo = max(xa.min(), xt.min())
    hi = min(xa.max(), xt.max())
    if not hi > lo:
        warnings.warn("RD curves do not overlap; Bjøntegaard delta is undefined", RuntimeWarning)
        return float("nan")
    oa, ot = np.argsort(xa), np.argsort(xt)
    fa = _interpolator(xa[oa], ya[oa], method)
    ft = _interpolator(xt[ot], yt[ot], method)
    return (float(ft.integrate(lo, hi)) - float(fa.integrate(lo, hi))) / (hi - lo)


def _use_package(backend: str, method: str):
    if backend not in ("auto", "bjontegaard", "native"):
        raise ValueError("backend must be 'auto', 'bjontegaard' or 'native'")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; use one of {METHODS}")
    if backend == "native":
        return None
    mod = _bjontegaard_module()
    if mod is None and backend == "bjontegaard":
        raise ImportError("the 'bjontegaard' package is not installed")
    return mod


def _package_bd(kind: str, mod, ra, qa, rt, qt, method: str) -> float:
    """The ``bjontegaard`` package's ``bd_rate``/``bd_psnr`` after our own monotonicity check
    (its error on a non-monotone curve is opaque), with its low-overlap warning replaced by ours."""
    if method != "cubic":  # the interpolated axis must be monotone
        for v, what in ((qa, "anchor PSNR"), (qt, "test PSNR")) if kind == "rate" else \
                ((np.log10(ra), "anchor rate"), (np.log10(rt), "test rate")):
            _check_monotone(v, what)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fn = mod.bd_rate if kind == "rate" else mod.bd_psnr
        val = float(fn(ra, qa, rt, qt, method=method, require_matching_points=False, min_overlap=0))
    if math.isnan(val):
        warnings.warn("RD curves do not overlap; Bjøntegaard delta is undefined", RuntimeWarning)
    return val


def _delta(kind: str, rate_anchor: _ArrayLike, psnr_anchor: _ArrayLike, rate_test: _ArrayLike,
           psnr_test: _ArrayLike, method: str, backend: str) -> float:
    """The body :func:`bd_rate` (``kind="rate"``) and :func:`bd_psnr` (``kind="psnr"``) share:
    validate both curves, then the ``bjontegaard`` package or the native integral over the overlap
    (BD-rate integrates log-rate over PSNR, BD-PSNR integrates PSNR over log-rate)."""
    ra, qa = _prep(rate_anchor, psnr_anchor, "anchor")
    rt, qt = _prep(rate_test, psnr_test, "test")
    mod = _use_package(backend, method)
    if mod is not None:
        return _package_bd(kind, mod, ra, qa, rt, qt, method)
    if kind == "psnr":
        return _bd_native(np.log10(ra), qa, np.log10(rt), qt, method)
    avg_log = _bd_native(qa, np.log10(ra), qt, np.log10(rt), method)
    return (10.0 ** avg_log - 1.0) * 100.0 if not math.isnan(avg_log) else float("nan")


def bd_rate(rate_anchor: _ArrayLike, psnr_anchor: _ArrayLike, rate_test: _ArrayLike,
            psnr_test: _ArrayLike, method: str = "pchip", backend: str = "auto") -> float:
    """Bjøntegaard delta rate of the test curve against the anchor, in percent.

    The average bit-rate difference at equal quality over the two curves' shared PSNR range: the
    standard single number for "how many bits does this codec save".

    Args:
        rate_anchor: the anchor's rates (bpp or any unit, > 0), one per RD point, any order.
        psnr_anchor: its quality at those rates (dB).
        rate_test: the test codec's rates.
        psnr_test: its quality at those rates.
        method: ``"pchip"`` (JVET, default), ``"cubic"`` (VCEG-M33) or ``"akima"``.
        backend: ``"auto"`` (the ``bjontegaard`` package when installed, else the native
            implementation), ``"bjontegaard"`` or ``"native"``.

    Returns:
        Percent; negative when the test codec needs fewer bits. ``nan`` (with a warning) when the
        curves share no PSNR range.

    Raises:
        ValueError: fewer than 2 points, non-finite or non-positive values, rates and PSNRs of
            different lengths, an unknown method or backend, or (piecewise methods) a curve whose
            interpolated axis is not strictly increasing: drop dominated points first
            (:func:`rd_front`), as a silent fold-back would give a meaningless delta.
        ImportError: ``backend="bjontegaard"`` without the package installed.
    """
    return _delta("rate", rate_anchor, psnr_anchor, rate_test, psnr_test, method, backend)


def bd_psnr(rate_anchor: _ArrayLike, psnr_anchor: _ArrayLike, rate_test: _ArrayLike,
            psnr_test: _ArrayLike, method: str = "pchip", backend: str = "auto") -> float:
    """Bjøntegaard delta PSNR of the test curve against the anchor, in dB.

    The average quality difference at equal rate over the two curves' shared log-rate range;
    defined where BD-rate is not (curves that share rates but not qualities).

    Args:
        rate_anchor: the anchor's rates (bpp or any unit, > 0), one per RD point, any order.
        psnr_anchor: its quality at those rates (dB).
        rate_test: the test codec's rates.
        psnr_test: its quality at those rates.
        method: ``"pchip"`` (JVET, default), ``"cubic"`` (VCEG-M33) or ``"akima"``.
        backend: ``"auto"`` (the ``bjontegaard`` package when installed, else the native
            implementation), ``"bjontegaard"`` or ``"native"``.

    Returns:
        dB; positive when the test codec has the higher quality. ``nan`` (with a warning) when the
        curves share no rate range.

    Raises:
        ValueError: fewer than 2 points, non-finite or non-positive values, rates and PSNRs of
            different lengths, an unknown method or backend, or (piecewise methods) a curve whose
            interpolated axis is not strictly increasing: drop dominated points first
            (:func:`rd_front`), as a silent fold-back would give a meaningless delta.
        ImportError: ``backend="bjontegaard"`` without the package installed.
    """
    return _delta("psnr", rate_anchor, psnr_anchor, rate_test, psnr_test, method, backend)


def interp_psnr_at_rate(rates: _ArrayLike, psnrs: _ArrayLike, r, method: str = "pchip",
                        extrapolate: bool = False):
    """PSNR of an RD curve at rate(s) ``r``, interpolated over log-rate.

    Codecs are measured at their own settings, so comparing them at the same rates (the paper's
    "gain at 1.1 bpp", the report's quality-at-rates table) needs interpolation.

    Args:
        rates: the curve's rates (> 0), any order.
        psnrs: its quality at those rates.
        r: one rate or several.
        method: ``"pchip"`` (default) or ``"linear"``.
        extrapolate: continue beyond the measured rates (the end segments' slope for
            ``"linear"``); off by default, since a codec's quality outside its range is unknown.

    Returns:
        A float for scalar ``r``, else an array; ``nan`` outside the measured range unless
        ``extrapolate``.

    Raises:
        ValueError: an invalid curve (see :func:`bd_rate`), rates that do not strictly increase,
            or an unknown method.
    """
    x, y = _prep(rates, psnrs, "curve")
    lx = np.log10(x)
    _check_monotone(lx, "rates")
    rq = np.asarray(r, dtype=np.float64)
    lq = np.log10(np.where(rq > 0, rq, np.nan))
    if method == "pchip":
        import scipy.interpolate as si

        out = si.PchipInterpolator(lx, y, extrapolate=True)(lq)
    elif method == "linear":
        out = np.interp(lq, lx, y)
        if extrapolate:
            lo_s = (y[1] - y[0]) / (lx[1] - lx[0])
            hi_s = (y[-1] - y[-2]) / (lx[-1] - lx[-2])
            out = np.where(lq < lx[0], y[0] + lo_s * (lq - lx[0]), out)
            out = np.where(lq > lx[-1], y[-1] + hi_s * (lq - lx[-1]), out)
    else:
        raise ValueError("method must be 'pchip' or 'linear'")
    if not extrapolate:
        out = np.where((lq < lx[0] - 1e-12) | (lq > lx[-1] + 1e-12), np.nan, out)
    return float(out) if np.ndim(out) == 0 else out


def interp_rate_at_psnr(rates: _ArrayLike, psnrs: _ArrayLike, q, method: str = "pchip"):
    """Rate of an RD curve at PSNR(s) ``q``, interpolated in log-rate: the bits a codec needs for a
    given quality.

    Args:
        rates: the curve's rates (> 0), any order.
        psnrs: its quality at those rates; must rise with rate.
        q: one quality or several (dB).
        method: ``"pchip"`` (default) or ``"linear"``.

    Returns:
        A float for scalar ``q``, else an array; ``nan`` outside the measured quality range.

    Raises:
        ValueError: an invalid curve (see :func:`bd_rate`), a PSNR that does not strictly
            increase with rate, or an unknown method.
    """
    x, y = _prep(rates, psnrs, "curve")
    _check_monotone(y, "PSNR")
    qq = np.asarray(q, dtype=np.float64)
    if method == "pchip":
        import scipy.interpolate as si

        lr = si.PchipInterpolator(y, np.log10(x), extrapolate=True)(qq)
    elif method == "linear":
        lr = np.interp(qq, y, np.log10(x))
    else:
        raise ValueError("method must be 'pchip' or 'linear'")
    out = np.where((qq < y[0] - 1e-12) | (qq > y[-1] + 1e-12), np.nan, 10.0 ** lr)
    return float(out) if np.ndim(out) == 0 else out
