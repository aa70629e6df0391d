"""The paper's experiments (Shi et al. 2024, III-D to IV) on the project's test split, as one report.

    .venv/bin/python pipelines/evaluate_paper.py                      # everything -> reports/paper-rs-v1/
    .venv/bin/python pipelines/evaluate_paper.py --classical-only --source ucmerced --name classical-ucmerced
    .venv/bin/python pipelines/evaluate_paper.py --budget   # every learned codec at one training budget
                                                            # (pipelines/train_budget.py) -> reports/paper-budget/

What it measures (all resumable: rerun the same command after an interruption):

1. **RD** of the classical anchors (JPEG 2000, WebP, BPG-like HEVC intra, AVIF, JPEG XL) and of
   every learned codec with checkpoints, on the test split of ``data/geocompress-rs-v1.zarr``
   (the split the learned codecs never saw in training): bpp, PSNR eq. (10) and fixed-peak,
   MS-SSIM dB; BD-rate / BD-PSNR of every codec against every classical anchor (Figs. 8-9).
2. **Ablation** (MGSSNet baseline / +SSIF-AM / +MHG-AM / full, Figs. 12-13) and
   **generalization** (factorized-ReLU with each module, Fig. 14) from ``runs/<name>/q<n>/model.pt``.
3. **Visual comparison** of one tile near 0.3 bpp from every codec (Figs. 10-11).
4. **Classification**: a ResNet-18 trained on the UC Merced training tiles, tested on the UC
   Merced test tiles as each codec reconstructs them near 0.8 bpp (Figs. 15-16).

Learned checkpoints: MGSSNet from the shipped weights (``geocompress/weights``) or
``runs/mgssnet``; the others from ``runs/<name>/q<n>/model.pt`` as ``geocompress train`` /
``pipelines/train_qualities.py`` export them (names: ``bmshj2018-factorized``,
``bmshj2018-hyperprior``, ``mbt2018-mean``, ``mbt2018``, ``cheng2020-attn``, ``mgssnet-baseline``,
``mgssnet-ssif``, ``mgssnet-mhg``, ``bmshj2018-factorized-{ssif,mhg,lgcm}``). Whatever is missing
is listed in the report's *Missing* section; the rest is still measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from geocompress.evaluation.classifier import ClassifierConfig
from geocompress.evaluation.images import load_zarr
from geocompress.evaluation.rd import ClassicalSpec
from geocompress.evaluation.report import (
    ClassificationSetup,
    ReportConfig,
    paper_learned_specs,
    run_report,
)

REPO = Path(__file__).resolve().parents[1]
DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
CLASSICAL = ("jpeg2000", "webp", "bpg-hevc", "avif", "jpegxl")
CLASSES_SOURCE = "ucmerced"


def read_budget(runs: Path) -> dict | None:
    """The protocol pipelines/train_budget.py recorded and what each model cost (None: no runs)."""
    if not (runs / "budget.json").exists():
        return None
    models = {d.name: json.loads((d / "budget.json").read_text())
              for d in sorted(runs.iterdir()) if (d / "budget.json").is_file()}
    out = {"protocol": json.loads((runs / "budget.json").read_text()), "models": models}
    shipped = REPO / "catalogs" / "models" / "mgssnet.json"  # the shipped weights' own training
    if shipped.exists():
        qs = json.loads(shipped.read_text()).get("qualities", [])
        steps = [q["steps"] + (q.get("warm_start") or {}).get("steps", 0) for q in qs]
        if steps:
            out["shipped_steps"] = [min(steps), max(steps)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="paper-rs-v1", help="report name (reports/NAME/)")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--source", help="evaluate only this source's test tiles (e.g. ucmerced)")
    p.add_argument("--runs", type=Path, default=REPO / "runs")
    p.add_argument("--out", type=Path, default=REPO / "reports")
    p.add_argument("--limit", type=int, help="at most N test tiles (quick look)")
    p.add_argument("--classical-only", action="store_true", help="no learned codecs")
    p.add_argument("--no-classification", action="store_true")
    p.add_argument("--classifier-epochs", type=int, default=40)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: fastest on a shared 2-core machine)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--budget", action="store_true",
                   help="the learned codecs of pipelines/train_budget.py (runs/budget), all trained by "
                        "one protocol, beside the shipped MGSSNet; report reports/paper-budget/")
    p.add_argument("--precision", default=None,
                   help="learned codecs' transform precision (default float64; --budget: auto)")
    a = p.parse_args(argv)
    # paths inside the repository are written relative to it: the report is committed
    a.dataset, a.runs, a.out = [Path(os.path.relpath(x.resolve(), REPO))
                                if x.resolve().is_relative_to(REPO) else x.resolve()
                                for x in (a.dataset, a.runs, a.out)]
    os.chdir(REPO)
    budget = None
    if a.budget:
        if a.runs == Path("runs"):
            a.runs = Path("runs") / "budget"
        if a.name == "paper-rs-v1":
            a.name = "paper-budget"
        a.precision = a.precision or "auto"
        budget = read_budget(a.runs)
    if not a.dataset.exists():
        print(f"{a.dataset} not found: build it first with `.venv/bin/python "
              f"pipelines/build_dataset.py`", file=sys.stderr)
        return 2
    images = load_zarr(a.dataset, split="test", source=a.source, limit=a.limit)
    classification = None
    if not a.no_classification:
        classification = ClassificationSetup(
            train=load_zarr(a.dataset, split="train", source=CLASSES_SOURCE),
            val=load_zarr(a.dataset, split="val", source=CLASSES_SOURCE),
            test=load_zarr(a.dataset, split="test", source=CLASSES_SOURCE, limit=a.limit),
            target_bpp=0.8, config=ClassifierConfig(epochs=a.classifier_epochs, threads=a.threads))
    learned = [] if a.classical_only else paper_learned_specs(a.runs, budget=a.budget,
                                                              precision=a.precision)
    if budget is not None:  # a model whose protocol has not finished is not at the budget yet
        for spec in learned:
            if spec.checkpoints and spec.name not in budget["models"]:
                spec.checkpoints = {}
                spec.expected = f"{a.runs / spec.name}/budget.json (its training has not finished)"
    cfg = ReportConfig(
        name=a.name, images=images, classical=[ClassicalSpec(c) for c in CLASSICAL],
        learned=learned,
        budget=budget,
        classification=classification, out_root=a.out, device=a.device, threads=a.threads,
        command="python pipelines/evaluate_paper.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    out = run_report(cfg)
    print(out / "README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
