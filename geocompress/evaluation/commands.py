"""``geocompress evaluate``: the paper's experiments on any image set, as one report.

The CLI picks this up through its optional hook (:func:`add_evaluate_parser`); everything here
only turns arguments into a :class:`geocompress.evaluation.report.ReportConfig`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from .rd import EVAL_GRIDS, ClassicalSpec, LearnedSpec

DEFAULT_CLASSICAL = ("jpeg2000", "webp", "avif", "jpegxl", "bpg-hevc")

__all__ = ["add_evaluate_parser", "build_config", "cmd_evaluate"]


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _grid(text: str) -> tuple[str, tuple[float, ...]]:
    codec, _, values = text.partition("=")
    if not values:
        raise argparse.ArgumentTypeError(f"--grid wants CODEC=V1,V2,..., got {text!r}")
    return codec, _floats(values)


def _checkpoint(text: str) -> tuple[str, int, str]:
    head, _, path = text.partition("=")
    name, _, q = head.partition(":")
    if not path or not q.isdigit():
        raise argparse.ArgumentTypeError(f"--checkpoint wants NAME:QUALITY=PATH, got {text!r}")
    return name, int(q), path


def _learned_from_plan(plan: dict[str, Any]) -> list[LearnedSpec]:
    specs = []
    for d in plan.get("learned", []):
        d = dict(d)
        d["checkpoints"] = {int(k): str(v) for k, v in d.get("checkpoints", {}).items()}
        if "groups" in d:
            d["groups"] = tuple(d["groups"])
        specs.append(LearnedSpec(**d))
    return specs


def build_config(a: argparse.Namespace):
    """The report configuration the ``geocompress evaluate`` arguments describe; the images are
    loaded here, so a bad path fails before any measurement.

    Args:
        a: the parsed arguments of :func:`add_evaluate_parser`'s parser.

    Returns:
        A :class:`~.report.ReportConfig`.

    Raises:
        ValueError: images that cannot be loaded (see :func:`~.images.load_images`).
        FileNotFoundError: a missing image folder, scene or ``--plan`` file.
    """
    from .classifier import ClassifierConfig
    from .images import load_images
    from .rd import discover_runs
    from .report import ClassificationSetup, ReportConfig, paper_learned_specs

    plan: dict[str, Any] = json.loads(Path(a.plan).read_text()) if a.plan else {}
    images = load_images(a.images, split=a.split, source=a.source, limit=a.limit, seed=a.seed)

    grids = dict(a.grid or [])
    grids.update({k: tuple(v) for k, v in plan.get("classical", {}).items()})
    names = (list(plan.get("classical", {})) or list(DEFAULT_CLASSICAL)) if a.codecs is None else \
        [c for c in a.codecs.split(",") if c and c != "none"]
    classical = [ClassicalSpec(c, grids.get(c)) for c in names]

    learned = _learned_from_plan(plan)
    if a.paper:
        learned += paper_learned_specs(a.runs, shipped=not a.no_shipped)
    elif a.runs and a.learned:
        for name, ckpts in discover_runs(a.runs, a.learned.split(",")).items():
            learned.append(LearnedSpec(name, None, ckpts, expected=str(Path(a.runs) / name / "q<n>" / "model.pt")))
    by_name = {s.name: s for s in learned}
    for name, q, path in a.checkpoint or []:
        if name not in by_name:
            by_name[name] = LearnedSpec(name, None)
            learned.append(by_name[name])
        by_name[name].checkpoints[q] = path
    if a.shipped:
        for arch in a.shipped.split(","):
            if arch not in by_name:
                learned.append(LearnedSpec(arch, arch, shipped=True))

    classification = None
    if a.classify:
        train = val = None
        if not a.classifier:
            src = a.train_images or a.images
            train = load_images(src, split="train", source=a.source, seed=a.seed)
            try:
                val = load_images(src, split="val", source=a.source, seed=a.seed)
            except ValueError:
                val = None
        cc = ClassifierConfig(size=a.classifier_size, epochs=a.classifier_epochs, seed=a.seed)
        classification = ClassificationSetup(train=train, val=val, target_bpp=a.class_bpp, config=cc,
                                             classifier=a.classifier)
    return ReportConfig(
        name=a.name, images=images, classical=classical, learned=learned,
        anchors=a.anchors.split(",") if a.anchors else None, rates=_floats(a.rates),
        visual_bpp=None if a.no_visual else a.visual_bpp, visual_image=a.visual_image,
        classification=classification, out_root=Path(a.out), progress=not getattr(a, "quiet", False),
        device=a.device, threads=a.threads, command="geocompress evaluate " + " ".join(shlex.quote(x) for x in a._argv)
        if getattr(a, "_argv", None) else None)


def cmd_evaluate(a: argparse.Namespace) -> int:
    """``geocompress evaluate``: run the report and print where its README is.

    Args:
        a: the parsed arguments.

    Returns:
        The exit status, 0.

    Raises:
        ValueError: see :func:`build_config` and :func:`~.report.run_report`.
    """
    from .report import run_report

    if getattr(a, "_argv", None) is None:
        a._argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "evaluate" else None
    out = run_report(build_config(a))
    print(out / "README.md")
    return 0


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``geocompress evaluate`` (the CLI's optional hook calls this).

    Args:
        subparsers: the CLI's sub-command registry.

    Returns:
        The sub-command's parser, its ``func`` set to :func:`cmd_evaluate`.
    """
    p = subparsers.add_parser(
        "evaluate", help="rate-distortion report: classical anchors, learned codecs, BD-rate, figures",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Measure codecs on an image set and write reports/NAME/: README.md summary, "
                    "CSV tables (per image, averaged RD, BD-rate / BD-PSNR of every codec vs every "
                    "anchor, quality at fixed rates), RD curves, a visual comparison near 0.3 bpp "
                    "and, with --classify, downstream scene-classification accuracy near 0.8 bpp "
                    "and confusion matrices. Rerunning the same command resumes.",
        epilog="examples:\n"
               "  geocompress evaluate classical-ucmerced --images data/geocompress-rs-v1.zarr "
               "--source ucmerced\n"
               "  geocompress evaluate paper --images data/geocompress-rs-v1.zarr --paper --classify\n"
               "  geocompress evaluate mine --images my_tiles/ --checkpoint mgssnet:1=q1.pt "
               "--checkpoint mgssnet:2=q2.pt\n"
               f"default classical sweeps: {json.dumps({k: list(v) for k, v in EVAL_GRIDS.items()})}")
    p.add_argument("name", help="report name: output goes to OUT/NAME/")
    g = p.add_argument_group("images")
    g.add_argument("--images", nargs="+", required=True,
                   help="a folder of images (class sub-folders = labels), a tile-dataset .zarr, "
                        "or GeoTIFF scene(s)")
    g.add_argument("--split", choices=("train", "val", "test"),
                   help="split to evaluate (.zarr default: test; folders: all images unless given)")
    g.add_argument("--source", help="only tiles of this source of a .zarr dataset (e.g. ucmerced)")
    g.add_argument("--limit", type=int, help="at most N images, evenly spaced (quick looks)")
    g.add_argument("--seed", type=int, default=0, help="split seed for folders (default 0)")
    c = p.add_argument_group("codecs")
    c.add_argument("--codecs", help=f"classical codecs, comma-separated, or 'none' "
                                    f"(default: {','.join(DEFAULT_CLASSICAL)})")
    c.add_argument("--grid", type=_grid, action="append", metavar="CODEC=V1,V2,...",
                   help="quality parameters of one classical codec's sweep")
    c.add_argument("--checkpoint", type=_checkpoint, action="append", metavar="NAME:Q=PATH",
                   help="a learned codec checkpoint at quality Q (repeat per quality / codec)")
    c.add_argument("--runs", default="runs",
                   help="folder of training runs, RUNS/NAME/qN/model.pt (default: runs/)")
    c.add_argument("--learned", help="learned codec names to take from --runs, comma-separated")
    c.add_argument("--shipped", help="architectures to evaluate with their shipped weights")
    c.add_argument("--paper", action="store_true",
                   help="the paper's learned codecs: MGSSNet, the 5 CompressAI baselines, the "
                        "ablation and generalization variants, from shipped weights / --runs")
    c.add_argument("--no-shipped", action="store_true", help="with --paper: MGSSNet from --runs")
    c.add_argument("--plan", help="JSON file: {\"learned\": [{name, arch, checkpoints: {q: path}, "
                                  "groups, label}], \"classical\": {codec: [params]}}")
    c.add_argument("--anchors", help="anchor codecs for BD tables (default: every classical codec)")
    c.add_argument("--device", default="cpu", help="device of the learned codecs (default cpu)")
    c.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    o = p.add_argument_group("report")
    o.add_argument("--rates", default="0.25,0.5,1.0", help="rates of the quality-at-rate table")
    o.add_argument("--visual-bpp", type=float, default=0.3, help="visual comparison rate (0.3)")
    o.add_argument("--visual-image", help="image name for the visual comparison (default: auto)")
    o.add_argument("--no-visual", action="store_true")
    o.add_argument("--classify", action="store_true",
                   help="downstream classification (labelled images; trains a ResNet-18 on the "
                        "train split of --train-images or of --images)")
    o.add_argument("--train-images", help="labelled training images for the classifier")
    o.add_argument("--classifier", help="use this trained classifier checkpoint")
    o.add_argument("--class-bpp", type=float, default=0.8, help="classification rate (0.8)")
    o.add_argument("--classifier-epochs", type=int, default=40)
    o.add_argument("--classifier-size", type=int, default=128, help="classifier input size (128)")
    o.add_argument("--out", default="reports", help="reports folder (default reports/)")
    p.set_defaults(func=cmd_evaluate)
    return p
