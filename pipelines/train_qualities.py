"""Train the shipped MGSSNet qualities, resumably, within a time budget.

    .venv/bin/python pipelines/train_qualities.py [--runs runs/mgssnet] [--base-min 55] [--branch-min 60]

Two phases, both resumable (rerun with larger budgets to continue every run where it stopped):

1. **base**: the middle quality (q3) trains from scratch with all cores.
2. **branch**: every quality (q3 included, which simply continues) trains side by side, one process
   and one torch thread each; the others start from q3's training state (weights and Adam
   moments, ``warm_start``): neighbouring lambdas share almost all of their transforms, so a
   branch needs a fraction of the steps of a run from scratch. One thread per process: on a small
   machine several single-threaded trainings get more steps per second in all than one
   multi-threaded one (PyTorch's OpenMP scaling on small convolutions is poor).
3. **polish**: every quality continues side by side at a lower learning rate (a short run rarely
   reaches the validation plateau that would halve it; the last low-rate stretch is worth a few
   tenths of a dB).

On a GPU box (see ``pipelines/device_train.sh``): ``--from-shipped`` skips phase 1 and warm-starts
every quality from the package's shipped weights of that quality (continuing the CPU runs), and
``--export-dir`` writes fp16 checkpoints (mgssnet-q<n>.pt) that ``pipelines/ship_weights.py
--checkpoints`` adopts and measures.

Budgets are cumulative training wall time per run (``wall_s`` of its training state), so a rerun
with the same budgets is a no-op and a rerun with larger ones continues. ``--more-min M`` instead
gives every quality M further minutes from wherever its run stands (and ``--polish-min`` on top),
which is what continuing unevenly trained runs wants; ``--branch-lr`` restarts them at a chosen lr
(a resumed run otherwise keeps the lr its plateau scheduler lowered; a higher lr, then the polish,
is the better use of a CPU session: ``catalogs/models/mgssnet-training.md``). Each run writes runs/mgssnet/q<n>/
(train_state.pt, log.csv, curves.png); ``pipelines/ship_weights.py`` exports whatever state is there at any time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geocompress.training.lambdas import paper_to_compressai  # noqa: E402
from geocompress.training.quantization import MODES  # noqa: E402
from geocompress.training.checkpoints import STATE, export_state  # noqa: E402

DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
# Shipped qualities: four entries of the paper's lambda list (0.211, 0.072, 0.033, 0.007),
# converted to CompressAI's convention (bpp + lambda * 255^2 * MSE) by catalogs/lambda.md's
# factor; they aim at about 0.1 .. 1.0 bpp on the test split (measured rates of the shipped,
# briefly trained weights: catalogs/models/mgssnet.md).
PAPER_LAMBDAS = {4: 0.211, 3: 0.072, 2: 0.033, 1: 0.007}
QUALITIES = {q: paper_to_compressai(v) for q, v in PAPER_LAMBDAS.items()}
BASE = 3
CONFIG = {"N": 64, "M": 96}
# lr 5e-4 rather than the paper's 1e-4: a CPU budget of hours, not days (see catalogs/models).
RECIPE = {"batch": 8, "crop": 128, "lr": 5e-4, "aux_lr": 1e-3, "val_every": 250, "val_limit": 32,
          "plateau_patience": 4, "checkpoint_every_s": 120.0, "steps": 200_000}


def trained_seconds(run: Path) -> float:
    state = run / STATE
    if not state.exists():
        return 0.0
    return float(torch.load(state, map_location="cpu", weights_only=False)["wall_s"])


def train_one(runs: Path, dataset: Path, q: int, budget_s: float, threads: int, device: str,
              warm: Path | None, lr: float | None = None, quantization: str | None = None,
              stretch: float | None = None) -> None:
    from geocompress.training import train

    run = runs / f"q{q}"
    left = budget_s - trained_seconds(run)
    if (run / STATE).exists():
        warm = None
    print(f"[{time.strftime('%H:%M:%S')}] q{q} lambda={QUALITIES[q]} {max(left, 0) / 60:.1f} min "
          f"left, warm start: {warm}", flush=True)
    if left <= 30:
        return
    r = train("mgssnet", CONFIG, dataset, QUALITIES[q], run, quality=q, warm_start=warm,
              time_budget_s=left, threads=threads, device=device,
              dataset_name="geocompress-rs-v1", progress=True, lr_override=lr,
              quantization=quantization, stretch=stretch, **RECIPE)
    print(f"[{time.strftime('%H:%M:%S')}] q{q}: step {r.step}, last val {json.dumps(r.val)}",
          flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "mgssnet")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--base-min", type=float, default=55.0, help="phase 1: minutes of q3 alone")
    p.add_argument("--branch-min", type=float, default=60.0,
                   help="phase 2: further minutes of every quality, side by side")
    p.add_argument("--polish-min", type=float, default=0.0,
                   help="phase 3: further minutes of every quality at --polish-lr")
    p.add_argument("--polish-lr", type=float, default=1e-4)
    p.add_argument("--branch-lr", type=float, default=None,
                   help="phase 2: set every run's lr to this (default: a resumed run keeps its own, "
                        "which the plateau scheduler may have lowered; a new run starts at --lr)")
    p.add_argument("--quantization", choices=MODES, default=None,
                   help="training quantization of every run (default: each run keeps its own; "
                        "geocompress.training.quantization)")
    p.add_argument("--stretch", type=float, default=None,
                   help="probability that a training crop is re-stretched band by band, a false-colour "
                        "composite (geocompress.training.data.restretch; default: each run keeps "
                        "its own, else 0)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of phase 1")
    p.add_argument("--device", default="auto")
    p.add_argument("--from-shipped", action="store_true",
                   help="no phase 1: every quality warm-starts from its shipped weights")
    p.add_argument("--export-dir", type=Path, default=None,
                   help="finally export every run as DIR/mgssnet-q<n>.pt (fp16)")
    p.add_argument("--batch", type=int, default=RECIPE["batch"])
    p.add_argument("--crop", type=int, default=RECIPE["crop"])
    p.add_argument("--lr", type=float, default=RECIPE["lr"])
    p.add_argument("--more-min", type=float, default=None,
                   help="instead of --branch-min: M further minutes of every quality from where its "
                        "run stands (not idempotent: each rerun adds M again)")
    p.add_argument("--qualities", type=int, nargs="+", choices=sorted(QUALITIES), default=None,
                   help="phases 2-3 train only these qualities (default: all); with four runs on two "
                        "cores, leaving one out gives each of the others a third more steps")
    p.add_argument("--only", type=int, help=argparse.SUPPRESS)  # one child (internal)
    p.add_argument("--phase", choices=("branch", "polish"), help=argparse.SUPPRESS)
    p.add_argument("--target-s", type=float, help=argparse.SUPPRESS)  # the child's budget (internal)
    a = p.parse_args(argv)
    RECIPE.update(batch=a.batch, crop=a.crop, lr=a.lr)
    base_s = 0.0 if a.from_shipped else a.base_min * 60
    if a.only is not None:  # a phase-2 or phase-3 child
        warm = a.runs / f"q{BASE}" / STATE if a.only != BASE else None
        if a.from_shipped:
            from geocompress.codec.weights import shipped_path

            warm = shipped_path("mgssnet", a.only)[0]
        if a.target_s is not None:
            budget = a.target_s
        else:
            budget = a.branch_min * 60 + (base_s if a.only == BASE else 0)
            if a.phase == "polish":
                budget += a.polish_min * 60
        train_one(a.runs, a.dataset, a.only, budget, 1, a.device, warm,
                  a.polish_lr if a.phase == "polish" else a.branch_lr, a.quantization, a.stretch)
        return
    if not a.from_shipped:
        train_one(a.runs, a.dataset, BASE, base_s, a.threads, a.device, None,
                  quantization=a.quantization, stretch=a.stretch)
    qualities = sorted(set(a.qualities or QUALITIES), reverse=True)
    a.runs.mkdir(parents=True, exist_ok=True)  # --from-shipped on a fresh machine has no phase 1 to make it
    if a.more_min is not None:  # fix each run's targets now, before any of them moves
        start = {q: trained_seconds(a.runs / f"q{q}") for q in qualities}
    for phase in ("branch", "polish") if a.polish_min > 0 else ("branch",):
        procs = []
        for q in qualities:
            cmd = [sys.executable, __file__, "--runs", str(a.runs), "--dataset", str(a.dataset),
                   "--base-min", str(a.base_min), "--branch-min", str(a.branch_min),
                   "--polish-min", str(a.polish_min), "--polish-lr", str(a.polish_lr),
                   *(["--branch-lr", str(a.branch_lr)] if a.branch_lr is not None else []),
                   *(["--quantization", a.quantization] if a.quantization else []),
                   *(["--stretch", str(a.stretch)] if a.stretch is not None else []),
                   "--device", a.device, "--only", str(q), "--phase", phase,
                   "--batch", str(a.batch), "--crop", str(a.crop), "--lr", str(a.lr)]
            cmd += ["--from-shipped"] if a.from_shipped else []
            if a.more_min is not None:
                target = start[q] + 60 * (a.more_min + (a.polish_min if phase == "polish" else 0))
                cmd += ["--target-s", str(target)]
            log = open(a.runs / f"q{q}.log", "a")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        codes = [pr.wait() for pr in procs]
        print(f"[{time.strftime('%H:%M:%S')}] {phase} done, exit codes {codes}", flush=True)
        if any(codes):
            raise SystemExit(1)
    if a.export_dir is not None:
        a.export_dir.mkdir(parents=True, exist_ok=True)
        for q in sorted(QUALITIES):
            if (a.runs / f"q{q}" / STATE).exists():
                digest, meta, _ = export_state(a.runs / f"q{q}" / STATE,
                                               a.export_dir / f"mgssnet-q{q}.pt", q)
                print(f"q{q}: exported, {meta['total_steps']} steps in all, digest {digest[:16]}")


if __name__ == "__main__":
    main()
