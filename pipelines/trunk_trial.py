"""Choose the variable-rate MGSSNet's trunk by measurement (issue 35, item 3): short runs of equal
wall time, one after the other on the same cores, then one table of where each got.

    .venv/bin/python pipelines/trunk_trial.py [--minutes 7] [--threads 2] [--only NAME ...]

Variants (all ``mgssnet-vr``, every level trained at its own lambda, ``mixed`` quantization,
stretch 0.25, batch 8, lr 1e-4, seed 0, the train splits of ``geocompress-rs-v1`` plus
``geocompress-rs-extra-v1`` three times):

* ``warm-q6-c128``: N=64 / M=128 warm-started from the q6 wip weights, 128 x 128 crops;
* ``warm-q6-c256``: the same with 256 x 256 crops (4x the pixels per step);
* ``scratch-c128``: N=64 / M=128 from scratch;
* ``wide-scratch-c128``: N=128 / M=192 (the paper's widths) from scratch.

Each run validates every ``--val-every`` steps at levels 0, 4 and 8 (val split, 16 + 12 tiles,
full 256 x 256 tiles); the table compares the last validation of each, all reached after the same
minutes of training on the same machine. Runs are resumable (rerun to finish an interrupted one);
results go to ``catalogs/models/vr-trunk-trial.{json,md}``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = [str(REPO / "data" / "geocompress-rs-v1.zarr"), str(REPO / "data" / "geocompress-rs-extra-v1.zarr") + "*3"]
Q6 = REPO / "catalogs" / "models" / "wip" / "mgssnet-q6.pt"
VARIANTS = {
    "warm-q6-c128": {"config": {"N": 64, "M": 128}, "crop": 128, "warm_start": Q6},
    "warm-q6-c256": {"config": {"N": 64, "M": 128}, "crop": 256, "warm_start": Q6},
    "scratch-c128": {"config": {"N": 64, "M": 128}, "crop": 128, "warm_start": None},
    "wide-scratch-c128": {"config": {"N": 128, "M": 192}, "crop": 128, "warm_start": None},
}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def final_validation(run: Path, threads: int) -> dict:
    """The run's weights where it stopped, validated as the trainer does (levels 0, 4, 8), so that
    every variant is compared after the same wall time, not at its last periodic validation."""
    import torch

    from geocompress.codec import restore_constants
    from geocompress.models import build
    from geocompress.training.data import open_tiles
    from geocompress.training.trainer import evaluate, has_depthwise

    torch.set_num_threads(threads)
    state = torch.load(run / "train_state.pt", map_location="cpu", weights_only=False)
    model = build(state["arch"], **state["config"])
    model.load_state_dict(restore_constants(model, state["model"]))
    model = model.to(memory_format=torch.channels_last) if has_depthwise(model) else model
    val = open_tiles(DATA, "val", crop=None, augment=False, limit=16)
    out = evaluate(model, val, 0.0, torch.device("cpu"), 8, has_depthwise(model), "mixed")
    return {"step": state["step"], "loss_mean": round(out["loss"], 4),
            "levels": {f"q{q}": {k: round(float(v[k]), 4) for k in ("bpp", "psnr", "loss")}
                       for q, v in out["levels"].items()}}


def summarize(run: Path, threads: int) -> dict:
    rows = list(csv.DictReader((run / "log.csv").open()))
    train = [r for r in rows if r["phase"] == "train"]
    wall = float(train[-1]["wall_s"]) if train else 0.0
    return {"steps": len(train), "wall_s": wall, "s_per_step": round(wall / max(len(train), 1), 3),
            "val": final_validation(run, threads)}


def report(runs: Path) -> None:
    """``catalogs/models/vr-trunk-trial.{md,png}``: the table of final validations and the
    validation loss of each variant against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = json.loads((REPO / "catalogs" / "models" / "vr-trunk-trial.json").read_text())
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name in res["runs"]:
        rows = list(csv.DictReader((runs / name / "log.csv").open()))
        for ax, q in zip(axes, ("q0", "q4", "q8")):
            pts = [(float(r["wall_s"]) / 60, float(r["loss"])) for r in rows if r["phase"] == f"val@{q}"]
            final = res["runs"][name]["val"]["levels"][q]
            pts.append((res["runs"][name]["wall_s"] / 60, final["loss"]))
            ax.plot(*zip(*pts), "o-", ms=3, label=name)
            ax.set_title(f"validation loss at level {q[1:]} (its own lambda)")
            ax.set_xlabel("training minutes (same machine, same cores)")
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(REPO / "catalogs" / "models" / "vr-trunk-trial.png", dpi=100)
    lines = ["# Variable-rate MGSSNet: which trunk (issue 35, item 3)", "",
             f"Equal wall time: {res['minutes_each']:g} minutes of training each, one after the other "
             f"on {res['cpu']}, {res['threads']} torch threads; measured by `pipelines/trunk_trial.py`. "
             "Every variant is `mgssnet-vr` trained at every level with its own lambda; the final "
             "validation is the weights where each stopped (val split, 16 + 12 tiles, full tiles, "
             "`mixed` quantization's eval: the real decoder's latent, estimated rate).", "",
             "| variant | trunk | crop | start | steps | s / step | level 0 bpp / dB | level 4 bpp / dB "
             "| level 8 bpp / dB | mean val loss |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in sorted(res["runs"].items(), key=lambda kv: kv[1]["val"]["loss_mean"]):
        lv = r["val"]["levels"]
        cells = " | ".join(f"{lv[q]['bpp']:.3f} / {lv[q]['psnr']:.2f}" for q in ("q0", "q4", "q8"))
        lines.append(f"| {name} | N={r['config']['N']} M={r['config']['M']} | {r['crop']} | "
                     f"{'q6 wip weights' if r['warm_start'] else 'scratch'} | {r['steps']} | "
                     f"{r['s_per_step']} | {cells} | {r['val']['loss_mean']:.3f} |")
    lines += ["", "![validation loss against wall time](vr-trunk-trial.png)", ""]
    (REPO / "catalogs" / "models" / "vr-trunk-trial.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--val-every", type=int, default=300)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "vr-trunk-trial")
    p.add_argument("--only", nargs="*", default=None, choices=sorted(VARIANTS))
    p.add_argument("--report", action="store_true", help="only rewrite the table and plot")
    a = p.parse_args(argv)
    if a.report:
        report(a.runs)
        return
    from geocompress.training.trainer import train

    results = {}
    for name, v in VARIANTS.items():
        if a.only and name not in a.only:
            continue
        t0 = time.time()
        train("mgssnet-vr", v["config"], DATA, 0.0, a.runs / name, steps=10 ** 7, crop=v["crop"],
              batch=8, lr=1e-4, quantization="mixed", stretch=0.25, threads=a.threads,
              warm_start=v["warm_start"], val_every=a.val_every, val_limit=16,
              time_budget_s=a.minutes * 60, progress=False, export=False,
              dataset_name="geocompress-rs-v1+geocompress-rs-extra-v1*3")
        results[name] = {**summarize(a.runs / name, a.threads), "crop": v["crop"], "config": v["config"],
                         "warm_start": v["warm_start"] is not None}
        print(name, json.dumps(results[name]), f"{time.time() - t0:.0f} s", flush=True)
    out = REPO / "catalogs" / "models" / "vr-trunk-trial.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old.setdefault("runs", {}).update(results)
    old.update({"cpu": cpu_name(), "threads": a.threads, "minutes_each": a.minutes})
    out.write_text(json.dumps(old, indent=1) + "\n")
    report(a.runs)


if __name__ == "__main__":
    main()
