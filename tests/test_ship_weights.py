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


def test_catalog_lists_the_lr_each_quality_ran_at(tmp_path, monkeypatch):
    repo = Path(__file__).resolve().parents[1]
    entries = json.loads((repo / "catalogs" / "models" / "mgssnet.json").read_text())["qualities"][:2]
    entries[1]["lr_schedule"] = [{"from_step": 1, "to_step": 200, "lr": 2.5e-4, "ramp_from": 1.25e-6},
                                 {"from_step": 201, "to_step": 900, "lr": 1e-4}]
    entries[0].pop("lr_schedule", None)
    for e in entries:
        e.pop("stretch", None)  # entries exported before the augmentation existed
    entries[1]["warm_start"] = {"path": "q3", "steps": 100, "lambda": 0.009,
                                "lr_schedule": [{"from_step": 1, "to_step": 100, "lr": 5e-4}]}
    monkeypatch.setattr(ship_weights, "CATALOG", tmp_path)
    ship_weights.write_catalog(entries, 162, Path("geocompress-rs-v1.zarr"))
    md = (tmp_path / "mgssnet.md").read_text()
    assert f"* q{entries[1]['quality']}: 1-200: ramp to 0.00025; 201-900: 0.0001; inherited from q3 " \
           "(100 steps, numbered over the chain): 1-100: 0.0005" in md
    assert f"* q{entries[0]['quality']}: not recorded" in md
    saved = json.loads((tmp_path / "mgssnet.json").read_text())["qualities"]
    assert saved[1]["lr_schedule"][1] == {"from_step": 201, "to_step": 900, "lr": 1e-4}
    assert "per-band stretch augmentation of the last phase: none" in md
    entries[1]["stretch"] = 0.25
    ship_weights.write_catalog(entries, 162, Path("geocompress-rs-v1.zarr"))
    md = (tmp_path / "mgssnet.md").read_text()
    assert f"stretch augmentation of the last phase: q{entries[0]['quality']} 0, " \
           f"q{entries[1]['quality']} 0.25" in md


def test_a_release_keeps_halo_priors_of_unchanged_weights_only():
    prior = {"file": "mgssnet-q3-halo.pt", "digest": "p"}
    old = {"digest": "a", "halo_prior": prior, "halo_prior_superseded": [{"file": "x", "digest": "o"}]}
    kept = ship_weights.halo_entries(old, {"quality": 3, "digest": "a"})
    assert kept == {"halo_prior": prior, "halo_prior_superseded": [{"file": "x", "digest": "o"}]}
    assert ship_weights.halo_entries(old, {"quality": 3, "digest": "b"}) == {}  # refit needed
    assert ship_weights.halo_entries({}, {"quality": 1, "digest": "c"}) == {}
