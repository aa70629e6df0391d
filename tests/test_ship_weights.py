"""Shipping a subset of qualities must keep the others listed, and never trust a changed file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from geocompress.codec import WeightsError, save_checkpoint, untrained

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import ship_weights  # noqa: E402


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    weights, catalog = tmp_path / "weights", tmp_path / "catalog"
    weights.mkdir(), catalog.mkdir()
    monkeypatch.setattr(ship_weights, "WEIGHTS", weights)
    monkeypatch.setattr(ship_weights, "CATALOG", catalog)
    entries = []
    for q in (1, 2):
        digest = save_checkpoint(untrained("bmshj2018-factorized", N=8, M=8), weights / f"m-q{q}.pt")
        entries.append({"file": f"m-q{q}.pt", "digest": digest, "quality": q,
                        "test": {"bpp": 0.1 * q, "psnr": 20.0 + q}})
    (catalog / "mgssnet.json").write_text(json.dumps({"qualities": entries}))
    (catalog / "mgssnet-test-tiles.json").write_text(json.dumps(
        {"tile_index": [3, 5], "qualities": {"1": [[1, 2]], "2": [[3, 4]]}}))
    return weights


def test_unexported_quality_keeps_its_figures(shipped):
    kept, stale = ship_weights.shipped_entries({2}, [3, 5])
    assert [e["quality"] for e in kept] == [1] and stale == []
    assert kept[0]["test"]["psnr"] == 21.0 and kept[0]["test"]["per_tile"] == [[1, 2]]


def test_other_test_tiles_mean_remeasure(shipped):
    kept, stale = ship_weights.shipped_entries({2}, [3, 6])
    assert kept == [] and [e["quality"] for e in stale] == [1] and "test" not in stale[0]


def test_changed_checkpoint_is_refused(shipped):
    save_checkpoint(untrained("bmshj2018-factorized", N=8, M=12), shipped / "m-q1.pt")
    with pytest.raises(WeightsError):
        ship_weights.shipped_entries({2}, [3, 5])
