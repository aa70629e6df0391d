"""The paper's claims, checked one by one against a report's measurements (issue 28).

A claim *holds* when the measured difference has the paper's sign and is larger than what the
measurement can resolve, *does not hold* when it has the opposite sign beyond that, and is *not
decided* otherwise (or when the curves do not share a rate range). What can be resolved:

* RD claims: ``RD_TOLERANCE_DB`` of BD-PSNR. Paired over the same test images a smaller gap is
  measurable, but one training seed per model at a short budget moves a model by about that much
  (this is a stated threshold, not a measured seed variance);
* classification: McNemar's exact test on the per-image correct / wrong pairs of the two codecs
  (two-sided, ``ALPHA``): with ~100 test tiles, one tile is ~1 % of OA, so the paper's
  +0.37 - 0.91 % cannot be resolved by this test set unless the gap is several times larger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rd import bd_matrix, curve

RD_TOLERANCE_DB = 0.1
ALPHA = 0.05
PAPER_RATE = 1.1  # bpp where the paper quotes its PSNR gains
BASELINES = ("bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018",
             "cheng2020-attn")
ABLATION_ORDER = ("mgssnet", "mgssnet-ssif", "mgssnet-mhg", "mgssnet-baseline")
GENERALIZATION = ("bmshj2018-factorized-ssif", "bmshj2018-factorized-mhg", "bmshj2018-factorized-lgcm")

HOLDS, FAILS, OPEN = "holds", "does not hold", "not decided"
MIN_OVERLAP = 0.5  # shared log-rate range (of the shorter curve) below which a BD delta decides nothing
RATE_MATCH = 1.1  # classification: the codec claimed better may spend at most 10 % more bits

# the paper's PSNR gains of MGSSNet at 1.1 bpp (Conclusion) and its OA gains near 0.81 bpp (IV-B)
PAPER_GAIN = {"mbt2018": 2.9, "mbt2018-mean": 4.2, "bmshj2018-hyperprior": 3.2,
              "bmshj2018-factorized": 18.9, "cheng2020-attn": 4.4}
PAPER_OA_GAIN = {"mbt2018": 0.73, "mbt2018-mean": 0.73, "bmshj2018-hyperprior": 0.91,
                 "bmshj2018-factorized": 0.91, "cheng2020-attn": 0.37}
PAPER_GENERALIZATION = {"bmshj2018-factorized-ssif": 11.4, "bmshj2018-factorized-mhg": 8.8,
                        "bmshj2018-factorized-lgcm": 7.0}

__all__ = ["Verdict", "bd_delta", "mcnemar_p", "psnr_gain_at", "rd_verdicts",
           "classification_verdicts"]


@dataclass
class Verdict:
    """One of the paper's claims, decided from a report's measurements.

    Attributes:
        claim: the claim in words.
        paper: what the paper reports.
        measured: what was measured, with what decides it.
        verdict: :data:`HOLDS`, :data:`FAILS` or :data:`OPEN`.
    """
    claim: str
    paper: str
    measured: str
    verdict: str


def bd_delta(rows: Sequence[dict[str, Any]], test: str, anchor: str, metric: str
             ) -> tuple[float, float, float]:
    """Bjøntegaard deltas of one codec against another, read from a report's averaged rows.

    The verdicts, the report's "what wins" list and ``pipelines/ship_budget.py`` all decide from
    these three numbers, so they are computed in one place (through :func:`.rd.bd_matrix`, with
    its RD-front filtering and overlap rules).

    Args:
        rows: averaged RD rows (``rd_average.csv`` / :func:`.rd.average`), every codec mixed.
        test: the codec whose gain is measured.
        anchor: the codec it is measured against.
        metric: the quality column (``"psnr_paper"``, ``"psnr"``, ``"ms_ssim_db"``).

    Returns:
        ``(BD-rate %, BD-quality dB, shared log-rate fraction of the shorter curve)``; all three
        NaN when either codec has no curve. A small overlap means the deltas decide little
        (:data:`MIN_OVERLAP`).
    """
    r = bd_matrix(rows, [test], [anchor], metric)
    return ((r[0]["bd_rate_pct"], r[0]["bd_quality_db"], r[0]["rate_overlap"]) if r
            else (math.nan, math.nan, math.nan))


def _sign(delta_db: float, overlap: float = 1.0) -> str:
    if not math.isfinite(delta_db) or not overlap >= MIN_OVERLAP:
        return OPEN
    if delta_db > RD_TOLERANCE_DB:
        return HOLDS
    if delta_db < -RD_TOLERANCE_DB:
        return FAILS
    return OPEN


def psnr_gain_at(rows: Sequence[dict[str, Any]], test: str, ref: str, metric: str,
                 rate: float = PAPER_RATE) -> tuple[float, float, float]:
    """PSNR gain of ``test`` over ``ref`` at one rate: the form of the paper's claims ("+2.9 % PSNR
    at 1.1 bpp").

    When ``rate`` lies beyond one of the curves, the highest rate both reach is used instead (and
    returned, so the wording can say so): extrapolating a codec's quality would invent it.

    Args:
        rows: averaged RD rows.
        test: the codec whose gain is measured.
        ref: the codec it is measured against.
        metric: the quality column.
        rate: the rate (bpp); log-rate interpolation between measured points.

    Returns:
        ``(rate used, relative PSNR gain %, gain dB)``; NaNs when the curves share no rate or one
        has fewer than 2 points.
    """
    bt, qt = curve(rows, test, metric)
    br, qr = curve(rows, ref, metric)
    if len(bt) < 2 or len(br) < 2:
        return math.nan, math.nan, math.nan
    hi = min(bt.max(), br.max())
    lo = max(bt.min(), br.min())
    if hi < lo:
        return math.nan, math.nan, math.nan
    r = min(rate, hi)
    a = float(np.interp(math.log(r), np.log(bt), qt))
    b = float(np.interp(math.log(r), np.log(br), qr))
    return r, 100.0 * (a - b) / b, a - b


def _f(v: float, digits: int = 1) -> str:
    return f"{v:+.{digits}f}" if math.isfinite(v) else "n/a"


def _ov(overlap: float) -> str:
    """The shared rate range, said only where it is too small to decide."""
    if math.isfinite(overlap) and overlap >= MIN_OVERLAP:
        return ""
    return (f" (curves share {100 * overlap:.0f} % of the shorter one's log-rate range)"
            if math.isfinite(overlap) else
            " (a curve has fewer than two points that raise both rate and quality)")


def _at(r: float, rate: float = PAPER_RATE) -> str:
    return f"at {r:.2f} bpp" + ("" if abs(r - rate) < 1e-9 else f" (highest shared rate; {rate:g} not reached)")


def rd_verdicts(rows: Sequence[dict[str, Any]], labels: dict[str, str], metric: str = "psnr_paper"
                ) -> list[Verdict]:
    """The paper's RD claims: MGSSNet against each baseline, the ablation order and the
    generalization gains, each decided by BD-PSNR beyond :data:`RD_TOLERANCE_DB`.

    Args:
        rows: averaged RD rows of a report (codecs absent from them are skipped).
        labels: codec name -> its label in the claims' wording.
        metric: the quality column.

    Returns:
        One :class:`Verdict` per claim that the measured codecs can decide or leave open.
    """
    have = {r["codec"] for r in rows}
    lab = lambda c: labels.get(c, c)  # noqa: E731
    out: list[Verdict] = []
    if "mgssnet" in have:
        for b in BASELINES:
            if b not in have:
                continue
            rate, bd_db, ov = bd_delta(rows, "mgssnet", b, metric)
            r, pct, db = psnr_gain_at(rows, "mgssnet", b, metric)
            out.append(Verdict(f"MGSSNet beats {lab(b)}", f"+{PAPER_GAIN[b]:g} % PSNR at 1.1 bpp",
                               f"BD-PSNR {_f(bd_db, 2)} dB, BD-rate {_f(rate)} %{_ov(ov)}"
                               + (f"; {pct:+.2f} % ({db:+.2f} dB) {_at(r)}" if math.isfinite(r) else ""),
                               _sign(bd_db, ov)))
    if "mgssnet-baseline" in have:
        bds = {c: bd_delta(rows, c, "mgssnet-baseline", metric) for c in ABLATION_ORDER[:-1]
               if c in have}
        gains = {c: v[1] for c, v in bds.items()} | {"mgssnet-baseline": 0.0}
        overlap = min((v[2] for v in bds.values()), default=math.nan)
        order = [c for c in ABLATION_ORDER if c in gains]
        measured = ", ".join(f"{lab(c)} {gains[c]:+.2f} dB" for c in order) + _ov(overlap)
        pairs = [gains[a] - gains[b] for a, b in zip(order, order[1:])]
        signs = [_sign(p, overlap) for p in pairs]
        verdict = FAILS if FAILS in signs else (HOLDS if signs and all(s == HOLDS for s in signs) else OPEN)
        out.append(Verdict("Ablation order: full > +SSIF-AM > +MHG-AM > baseline",
                           "each module adds PSNR, both together the most",
                           f"BD-PSNR vs the baseline: {measured}", verdict))
    if "bmshj2018-factorized" in have:
        for g in GENERALIZATION:
            if g not in have:
                continue
            rate, bd_db, ov = bd_delta(rows, g, "bmshj2018-factorized", metric)
            r, pct, db = psnr_gain_at(rows, g, "bmshj2018-factorized", metric)
            out.append(Verdict(f"{lab(g)} beats the factorized-ReLU model",
                               f"+{PAPER_GENERALIZATION[g]:g} % PSNR at 1.1 bpp",
                               f"BD-PSNR {_f(bd_db, 2)} dB, BD-rate {_f(rate)} %{_ov(ov)}"
                               + (f"; {pct:+.2f} % ({db:+.2f} dB) {_at(r)}" if math.isfinite(r) else ""),
                               _sign(bd_db, ov)))
    return out


def mcnemar_p(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value of two classifiers' per-image correctness.

    Paired on the same test images, only the images where exactly one is right carry
    information: with ~100 tiles, an OA gap of one tile is noise, and this says how much is not.

    Args:
        a_correct: per image, whether the first was right.
        b_correct: per image, whether the second was right (same images, same order).

    Returns:
        The p-value (1 when they never disagree).
    """
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    if n01 + n10 == 0:
        return 1.0
    return float(binomtest(n01, n01 + n10, 0.5).pvalue)


def classification_verdicts(correct: dict[str, Sequence[bool]], labels: dict[str, str],
                            bpp: dict[str, float] | None = None) -> list[Verdict]:
    """MGSSNet's overall accuracy on reconstructions against each baseline's (paper Fig. 15).

    A learned codec has a few qualities, so the two codecs' rates near the target can differ: a
    win counts only where the winner spent at most ``RATE_MATCH`` times the loser's bits, and only
    when McNemar's test is significant at :data:`ALPHA`.

    Args:
        correct: codec name -> per-image correctness on the same test images.
        labels: codec name -> its label in the claims' wording.
        bpp: codec name -> its mean bpp in the classification (None: unknown, no win counts).

    Returns:
        One :class:`Verdict` per baseline present; none without MGSSNet.
    """
    if "mgssnet" not in correct:
        return []
    bpp = bpp or {}
    m = np.asarray(correct["mgssnet"], bool)
    out = []
    for b in BASELINES:
        if b not in correct:
            continue
        o = np.asarray(correct[b], bool)
        gap = 100.0 * (m.mean() - o.mean())
        p = mcnemar_p(m, o)
        bm, bb = bpp.get("mgssnet", math.nan), bpp.get(b, math.nan)
        rates_ok = {True: bm <= RATE_MATCH * bb, False: bb <= RATE_MATCH * bm}[bool(gap > 0)]
        verdict = OPEN if p >= ALPHA or not rates_ok else (HOLDS if gap > 0 else FAILS)
        out.append(Verdict(f"Classification: MGSSNet's reconstructions classify better than "
                           f"{labels.get(b, b)}'s", f"+{PAPER_OA_GAIN[b]:g} % OA near 0.81 bpp",
                           f"OA {100 * m.mean():.1f} % vs {100 * o.mean():.1f} % ({gap:+.1f} points, "
                           f"McNemar p = {p:.2f}, {len(m)} tiles) at {bm:.2f} vs {bb:.2f} bpp"
                           + ("" if rates_ok or p >= ALPHA else "; the winner spent more bits"),
                           verdict))
    return out
