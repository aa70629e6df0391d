"""The paper's claims decided from measurements: holds / does not hold / not decided."""

from __future__ import annotations

import numpy as np
import pytest

from geocompress.evaluation.report import _budget_section, _verdict_section
from geocompress.evaluation.rd import LearnedSpec
from geocompress.evaluation.verdicts import (
    FAILS,
    HOLDS,
    OPEN,
    classification_verdicts,
    mcnemar_p,
    psnr_gain_at,
    rd_verdicts,
)

RATES = (0.15, 0.4, 0.9)


def _rows(codec: str, offset_db: float, rates=RATES) -> list[dict]:
    """An RD curve PSNR = 30 + 4 log2(bpp / 0.4) + offset, one averaged row per setting."""
    return [{"codec": codec, "kind": "learned", "setting": i + 1, "bpp": b, "images": 10,
             "psnr_paper": 30 + 4 * np.log2(b / 0.4) + offset_db, "enc_s": 0.05, "dec_s": 0.06}
            for i, b in enumerate(rates)]


def _by_claim(vs):
    return {v.claim: v for v in vs}


def test_rd_claims_follow_the_measured_sign():
    rows = (_rows("mgssnet", 0.5) + _rows("mbt2018", 0.0) + _rows("cheng2020-attn", 0.6)
            + _rows("bmshj2018-hyperprior", 0.45))
    vs = _by_claim(rd_verdicts(rows, {}))
    assert vs["MGSSNet beats mbt2018"].verdict == HOLDS
    assert "+0.50 dB" in vs["MGSSNet beats mbt2018"].measured
    assert vs["MGSSNet beats cheng2020-attn"].verdict == OPEN      # 0.1 dB: within the tolerance
    assert vs["MGSSNet beats bmshj2018-hyperprior"].verdict == OPEN
    rows = _rows("mgssnet", 0.0) + _rows("cheng2020-attn", 0.8)
    assert _by_claim(rd_verdicts(rows, {}))["MGSSNet beats cheng2020-attn"].verdict == FAILS


def test_gain_at_a_rate_beyond_the_curves_uses_the_highest_shared_rate():
    rows = _rows("a", 1.0) + _rows("b", 0.0)
    r, pct, db = psnr_gain_at(rows, "a", "b", "psnr_paper", rate=1.1)
    assert r == pytest.approx(0.9) and db == pytest.approx(1.0) and pct > 0
    r, pct, db = psnr_gain_at(rows, "a", "b", "psnr_paper", rate=0.4)
    assert r == 0.4 and pct == pytest.approx(100 / 30)
    # curves that share no rate decide nothing
    rows = _rows("a", 1.0, (0.1, 0.2)) + _rows("b", 0.0, (0.5, 0.9))
    assert np.isnan(psnr_gain_at(rows, "a", "b", "psnr_paper")[0])
    assert _by_claim(rd_verdicts(_rows("mgssnet", 0, (0.1, 0.2)) + _rows("mbt2018", 0, (0.5, 0.9)),
                                 {}))["MGSSNet beats mbt2018"].verdict == OPEN


def test_ablation_order():
    good = (_rows("mgssnet", 0.9) + _rows("mgssnet-ssif", 0.6) + _rows("mgssnet-mhg", 0.3)
            + _rows("mgssnet-baseline", 0.0))
    v = [x for x in rd_verdicts(good, {}) if x.claim.startswith("Ablation")][0]
    assert v.verdict == HOLDS
    swapped = (_rows("mgssnet", 0.9) + _rows("mgssnet-ssif", 0.2) + _rows("mgssnet-mhg", 0.6)
               + _rows("mgssnet-baseline", 0.0))
    assert [x for x in rd_verdicts(swapped, {}) if x.claim.startswith("Ablation")][0].verdict == FAILS
    close = (_rows("mgssnet", 0.9) + _rows("mgssnet-ssif", 0.55) + _rows("mgssnet-mhg", 0.5)
             + _rows("mgssnet-baseline", 0.0))
    assert [x for x in rd_verdicts(close, {}) if x.claim.startswith("Ablation")][0].verdict == OPEN


def test_mcnemar_and_classification_claims():
    rng = np.random.default_rng(0)
    base = rng.random(128) < 0.7
    assert mcnemar_p(base, base) == 1.0
    better = base.copy()
    better[~base] = True  # fixes every tile the other got wrong: ~38 discordant pairs, one way
    assert mcnemar_p(better, base) < 1e-6
    one_more = base.copy()
    one_more[np.flatnonzero(~base)[0]] = True  # +0.8 points of OA: not resolvable on 128 tiles
    assert mcnemar_p(one_more, base) == pytest.approx(1.0)
    same_rate = {"mgssnet": 0.80, "mbt2018": 0.78, "cheng2020-attn": 0.8}
    vs = _by_claim(classification_verdicts({"mgssnet": better, "mbt2018": base,
                                            "cheng2020-attn": one_more}, {}, same_rate))
    assert vs["Classification: MGSSNet's reconstructions classify better than mbt2018's"].verdict == HOLDS
    assert "at 0.80 vs 0.78 bpp" in vs["Classification: MGSSNet's reconstructions classify better "
                                       "than mbt2018's"].measured
    worse = classification_verdicts({"mgssnet": base, "mbt2018": better}, {}, same_rate)[0]
    assert worse.verdict == FAILS
    assert classification_verdicts({"mbt2018": base}, {}) == []
    # a win bought with more bits (or with rates unknown) decides nothing
    richer = classification_verdicts({"mgssnet": better, "mbt2018": base}, {},
                                     {"mgssnet": 0.95, "mbt2018": 0.70})[0]
    assert richer.verdict == OPEN and "the winner spent more bits" in richer.measured
    assert classification_verdicts({"mgssnet": better, "mbt2018": base}, {})[0].verdict == OPEN
    # ... but a win at fewer bits stands, and so does a loss at more bits
    assert classification_verdicts({"mgssnet": better, "mbt2018": base}, {},
                                   {"mgssnet": 0.70, "mbt2018": 0.95})[0].verdict == HOLDS
    assert classification_verdicts({"mgssnet": base, "mbt2018": better}, {},
                                   {"mgssnet": 0.95, "mbt2018": 0.70})[0].verdict == FAILS


def test_bd_claims_need_shared_rates():
    """A BD delta over a sliver of shared rate decides nothing, and the verdict says why."""
    from geocompress.evaluation.rd import rate_overlap

    assert rate_overlap(np.array(RATES), np.array(RATES)) == pytest.approx(1.0)
    far = [r * 3.5 for r in RATES]
    assert 0 < rate_overlap(np.array(RATES), np.array(far)) < 0.5
    rows = _rows("mgssnet", 2.0, far) + _rows("mbt2018", 0.0)
    v = _by_claim(rd_verdicts(rows, {}))["MGSSNet beats mbt2018"]
    assert v.verdict == OPEN and "log-rate range" in v.measured
    assert v.paper == "+2.9 % PSNR at 1.1 bpp"


def test_report_sections_state_the_budget_and_what_wins():
    rows = _rows("mgssnet", 0.0) + _rows("mbt2018", 0.5) + _rows("mgssnet-shipped", 2.0)
    budget = {"protocol": {"base_steps": 1200, "branch_steps": 300, "lambdas": [0.0018, 0.013, 0.13],
                           "base_quality": 2, "batch": 8, "crop": 128, "lr": 1e-4, "aux_lr": 1e-3,
                           "quantization": "noise", "seed": 0},
              "models": {"mgssnet": {"steps": 2100, "wall_s": 1500.0},
                         "mbt2018": {"steps": 2100, "wall_s": 400.0}},
              "shipped_steps": [17999, 31461]}
    learned = [LearnedSpec("mgssnet", "mgssnet"), LearnedSpec("mbt2018", "mbt2018"),
               LearnedSpec("mgssnet-shipped", "mgssnet", shipped=True)]
    text = "\n".join(_budget_section(budget, rows, {}, learned))
    assert "**1500 steps behind every checkpoint, 2100 per model**" in text
    assert "| mbt2018 | 2100 | 6.7 | 0.050 | 0.060 |" in text
    assert "| mgssnet-shipped | shipped" in text
    assert "the shipped MGSSNet weights had 17,999 - 31,461 steps per quality" in text
    text = "\n".join(_verdict_section(rows, {}, None, "psnr_paper", learned, budget))
    assert "| MGSSNet beats mbt2018 |" in text and "**does not hold**" in text
    assert "- mbt2018: +0.50 dB BD-PSNR over MGSSNet at equal steps; it also trained in less wall time" in text
    # a cheaper baseline that loses at equal steps leaves the equal-wall-time comparison open
    rows = _rows("mgssnet", 0.5) + _rows("mbt2018", 0.0)
    text = "\n".join(_verdict_section(rows, {}, None, "psnr_paper", learned, budget))
    assert "No baseline beats MGSSNet at equal steps" in text
    assert "- mbt2018: -0.50 dB BD-PSNR against MGSSNet at equal steps, in 27 % of its" in text
    assert "**not decided** by this budget" in text
