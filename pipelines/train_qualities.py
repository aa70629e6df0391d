"""Train the shipped MGSSNet qualities, resumably, within a time budget per quality.

    .venv/bin/python pipelines/train_qualities.py [--runs runs/mgssnet] [--budget-min 40,20,20,20]

The highest-rate quality trains first from scratch; each lower quality then starts from the
weights of the quality above it (warm start: the transforms barely change between neighbouring
lambdas, so a lower quality needs a fraction of the steps). Budgets are *cumulative* training
wall time per quality: rerunning with larger budgets continues every run where it stopped
(exact resume, see geocompress.training.trainer). Each run writes runs/mgssnet/q<n>/ (state,
log.csv, curves.png); pipelines/ship_weights.py exports whatever state is there at any time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from geocompress.training import train
from geocompress.training.lambdas import paper_to_compressai
from geocompress.training.trainer import STATE

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
# Shipped qualities: four entries of the paper's lambda list (0.211, 0.072, 0.033, 0.007),
# converted to CompressAI's convention (bpp + lambda * 255^2 * MSE) by catalogs/lambda.md's
# factor; converged, they aim at about 0.1 .. 1.0 bpp on the test split (briefly trained models
# sit lower: they first learn to drop detail; see catalogs/models/mgssnet.md for measured rates).
PAPER_LAMBDAS = {4: 0.211, 3: 0.072, 2: 0.033, 1: 0.007}
QUALITIES = {q: paper_to_compressai(v) for q, v in PAPER_LAMBDAS.items()}
CONFIG = {"N": 64, "M": 96}
RECIPE = {"batch": 8, "crop": 128, "lr": 3e-4, "aux_lr": 1e-3, "val_every": 200, "val_limit": 32,
          "plateau_patience": 4, "checkpoint_every_s": 180.0, "steps": 200_000}


def trained_seconds(run: Path) -> float:
    state = run / STATE
    if not state.exists():
        return 0.0
    return float(torch.load(state, map_location="cpu", weights_only=False)["wall_s"])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "mgssnet")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--budget-min", default="40,20,20,20",
                   help="cumulative minutes per quality, highest quality first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    order = sorted(QUALITIES, reverse=True)
    budgets = [float(b) * 60 for b in a.budget_min.split(",")]
    budgets += [budgets[-1]] * (len(order) - len(budgets))
    above: Path | None = None
    for q, budget in zip(order, budgets):
        run = a.runs / f"q{q}"
        left = budget - trained_seconds(run)
        warm = above / STATE if above is not None and not (run / STATE).exists() else None
        print(f"[{time.strftime('%H:%M:%S')}] q{q} lambda={QUALITIES[q]} budget {budget / 60:.0f} min, "
              f"{max(left, 0) / 60:.1f} min left, warm start: {warm}", flush=True)
        if left > 30:
            r = train("mgssnet", CONFIG, a.dataset, QUALITIES[q], run, quality=q, warm_start=warm,
                      time_budget_s=left, threads=a.threads, device=a.device,
                      dataset_name="geocompress-rs-v1", progress=True, **RECIPE)
            print(f"[{time.strftime('%H:%M:%S')}] q{q}: step {r.step}, last val "
                  f"{json.dumps(r.val)}", flush=True)
        above = run


if __name__ == "__main__":
    main()
