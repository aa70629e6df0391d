"""Every learned codec of the paper's comparison trained at one stated budget (issue 28).

    .venv/bin/python pipelines/train_budget.py                 # -> runs/budget/<name>/q<n>/model.pt
    .venv/bin/python pipelines/evaluate_paper.py --budget      # the report on those checkpoints

The protocol (the same for MGSSNet, the five CompressAI baselines, the ablation module sets and
the generalization variants, so the comparison measures the architectures, not their training):

* data: the train split of ``data/geocompress-rs-v1.zarr``; batch 8 random 128 x 128 crops with
  flips (the shipped recipe's crop), CompressAI's noise quantization, the paper's Adam lr 1e-4
  (aux 1e-3), R + lambda * 255^2 * MSE, per-layer mixed precision on this CPU, seed 0;
* widths: N=64 / M=96 for every model (the shipped MGSSNet's; cheng2020-attn N=64), so no model
  wins by size;
* lambdas: a **base** run at one lambda (``base_quality``, the highest) for ``BASE_STEPS`` steps, then each of the three
  lambdas (the middle one included, which simply continues) trains ``BRANCH_STEPS`` more steps from
  that base state (weights and Adam moments). Every checkpoint thus has ``BASE_STEPS +
  BRANCH_STEPS`` steps behind it; every model costs ``BASE_STEPS + 3 * BRANCH_STEPS`` steps.

Runs go in two single-threaded queues side by side (the models split by their measured step
time); everything is resumable: rerun the same command after an interruption. ``--budget-json``
records what each model cost (steps, wall seconds), which the report quotes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
RUNS = REPO / "runs" / "budget"

WIDTH = {"N": 64, "M": 96}
# name -> (registry architecture, config); names as pipelines/evaluate_paper.py looks for them
MODELS: dict[str, tuple[str, dict]] = {
    "mgssnet": ("mgssnet", WIDTH),
    "mgssnet-baseline": ("mgssnet", {**WIDTH, "modules": "baseline"}),
    "mgssnet-ssif": ("mgssnet", {**WIDTH, "modules": "ssif"}),
    "mgssnet-mhg": ("mgssnet", {**WIDTH, "modules": "mhg"}),
    "bmshj2018-factorized": ("bmshj2018-factorized", WIDTH),
    "bmshj2018-hyperprior": ("bmshj2018-hyperprior", WIDTH),
    "mbt2018-mean": ("mbt2018-mean", WIDTH),
    "mbt2018": ("mbt2018", WIDTH),
    "cheng2020-attn": ("cheng2020-attn", {"N": 64}),
    "bmshj2018-factorized-ssif": ("bmshj2018-factorized-ssif", WIDTH),
    "bmshj2018-factorized-mhg": ("bmshj2018-factorized-mhg", WIDTH),
    "bmshj2018-factorized-lgcm": ("bmshj2018-factorized-lgcm", WIDTH),
}
# mixed-precision s/step, 1 thread, batch 8 of 128^2 (benchmarks/train_speed.py, 2026-12-03, with the
# native kernels; the three MGSSNet variants scaled from 2026-12-02 by MGSSNet's own gain):
# only used to balance the two queues
COST = {"mgssnet": 0.49, "mgssnet-ssif": 0.43, "mgssnet-mhg": 0.36, "mgssnet-baseline": 0.32,
        "cheng2020-attn": 0.53, "bmshj2018-factorized-ssif": 0.29, "bmshj2018-factorized-lgcm": 0.12,
        "mbt2018": 0.17, "mbt2018-mean": 0.17, "bmshj2018-hyperprior": 0.16,
        "bmshj2018-factorized-mhg": 0.13, "bmshj2018-factorized": 0.09}


@dataclass(frozen=True)
class Budget:
    """One training protocol for every model; the report states it."""

    # the budget of the committed report (reports/paper-budget/): what a 2-core AMX CPU (bf16
    # mixed) gives all 12 models within one working session, beside the evaluation; a CPU
    # without native bf16 trains ~2.3x slower (catalogs/benchmarks.md)
    base_steps: int = 1000
    branch_steps: int = 200
    lambdas: tuple[float, ...] = (0.0018, 0.013, 0.13)  # CompressAI convention, q1 < q2 < q3
    # the base trains at the highest lambda: short branches lower a rate far faster than they
    # raise one, so the ladder spans more bpp than with a middle-lambda base
    base_quality: int = 3
    batch: int = 8
    crop: int = 128
    lr: float = 1e-4
    aux_lr: float = 1e-3
    quantization: str = "noise"
    val_every: int = 400
    val_limit: int = 32
    seed: int = 0

    @property
    def steps_per_checkpoint(self) -> int:
        return self.base_steps + self.branch_steps

    @property
    def steps_per_model(self) -> int:
        return self.base_steps + len(self.lambdas) * self.branch_steps


BASE_STATE = "base_state.pt"  # the base run's training state at base_steps, where branches start


def _train(name: str, budget: Budget, runs: Path, dataset: Path, q: int, steps: int,
           warm: Path | None) -> dict:
    from geocompress.training import train
    from geocompress.training.config import TrainConfig

    arch, config = MODELS[name]
    recipe = TrainConfig(steps=steps, batch=budget.batch, crop=budget.crop, lr=budget.lr,
                         aux_lr=budget.aux_lr, quantization=budget.quantization, warm_start=warm,
                         seed=budget.seed, val_every=budget.val_every, val_limit=budget.val_limit,
                         threads=1, device="cpu", quality=q, dataset_name="geocompress-rs-v1",
                         progress=False, checkpoint_every_s=300.0, warmup_steps=0,
                         plateau_patience=1000)  # a fixed lr: the protocol, not a scheduler, decides
    r = train(arch, config, dataset, budget.lambdas[q - 1], runs / name / f"q{q}", recipe)
    return {"step": r.step, "val": r.val}


def run_model(name: str, budget: Budget, runs: Path, dataset: Path) -> None:
    """Base, snapshot, branches: each step skipped when already done (resumable)."""
    import torch

    base_q = budget.base_quality
    root = runs / name
    snap = root / BASE_STATE
    t0 = time.time()
    if not snap.exists():
        _train(name, budget, runs, dataset, base_q, budget.base_steps, None)
        state = root / f"q{base_q}" / "train_state.pt"
        tmp = snap.with_suffix(".tmp")
        shutil.copyfile(state, tmp)
        tmp.replace(snap)
    for q in range(1, len(budget.lambdas) + 1):
        if q == base_q:
            _train(name, budget, runs, dataset, q, budget.steps_per_checkpoint, None)
        else:
            _train(name, budget, runs, dataset, q, budget.branch_steps, snap)
    walls = {}
    for q in range(1, len(budget.lambdas) + 1):
        st = torch.load(root / f"q{q}" / "train_state.pt", map_location="cpu", weights_only=False)
        walls[q] = float(st["wall_s"])
    base_wall = float(torch.load(snap, map_location="cpu", weights_only=False)["wall_s"])
    # the base quality's own run includes the base; the branches' runs do not
    cost = {"steps": budget.steps_per_model, "wall_s": round(sum(walls.values()), 1),
            "base_wall_s": round(base_wall, 1), "per_quality_wall_s": walls,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "session_s": round(time.time() - t0, 1)}
    (root / "budget.json").write_text(json.dumps(cost, indent=1))
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done, {cost['wall_s']:.0f} s of training",
          flush=True)


def machine() -> dict[str, str]:
    """The CPU and the training precision it implies, which the report states beside the budget."""
    import platform

    import torch

    from geocompress.training.mixed_precision import autocast_dtype

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dt = autocast_dtype("auto", torch.device("cpu"))
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__,
            "precision": "per-layer bf16 mixed" if dt is not None else "float32 (no native bf16)"}


def queues(names: list[str], n: int) -> list[list[str]]:
    """Longest-first split of the models over ``n`` queues by their step cost."""
    out: list[list[str]] = [[] for _ in range(n)]
    load = [0.0] * n
    for name in sorted(names, key=lambda m: -COST.get(m, 0.5)):
        i = load.index(min(load))
        out[i].append(name)
        load[i] += COST.get(name, 0.5)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=RUNS)
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    p.add_argument("--queues", type=int, default=2, help="processes side by side (one thread each)")
    p.add_argument("--base-steps", type=int, default=Budget.base_steps)
    p.add_argument("--branch-steps", type=int, default=Budget.branch_steps)
    p.add_argument("--base-quality", type=int, default=Budget.base_quality,
                   help="which lambda (1-based) the shared base run trains at")
    p.add_argument("--lr", type=float, default=Budget.lr,
                   help="main learning rate (default: the paper's); the aux lr stays")
    p.add_argument("--only", nargs="+", help=argparse.SUPPRESS)  # one queue (internal)
    a = p.parse_args(argv)
    budget = Budget(base_steps=a.base_steps, branch_steps=a.branch_steps,
                    base_quality=a.base_quality, lr=a.lr)
    if not a.dataset.exists():
        print(f"{a.dataset} not found: build it with `.venv/bin/python pipelines/build_dataset.py`",
              file=sys.stderr)
        return 2
    a.runs.mkdir(parents=True, exist_ok=True)
    recorded = a.runs / "budget.json"
    protocol = asdict(budget) | {"lambdas": list(budget.lambdas)}
    if recorded.exists():
        old = json.loads(recorded.read_text())
        if {k: old.get(k) for k in protocol} != protocol:
            print(f"{recorded} records another budget; use another --runs folder", file=sys.stderr)
            return 2
    recorded.write_text(json.dumps(protocol | {"machine": machine()}, indent=1))
    if a.only:
        for name in a.only:
            run_model(name, budget, a.runs, a.dataset)
        return 0
    procs = []
    for i, q in enumerate(queues(a.models, a.queues)):
        if not q:
            continue
        cmd = [sys.executable, __file__, "--runs", str(a.runs), "--dataset", str(a.dataset),
               "--base-steps", str(budget.base_steps), "--branch-steps", str(budget.branch_steps),
               "--base-quality", str(budget.base_quality), "--lr", repr(budget.lr),
               "--only", *q]
        log = open(a.runs / f"queue{i}.log", "a")
        print(f"queue {i}: {' '.join(q)} (log {log.name})", flush=True)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      env={**__import__('os').environ, "OMP_NUM_THREADS": "1"}))
    codes = [pr.wait() for pr in procs]
    print(f"[{time.strftime('%H:%M:%S')}] done, exit codes {codes}", flush=True)
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
