"""One evaluation report, the paper's experiments on any image set: ``reports/<name>/``.

What :func:`run_report` writes (every step resumable through JSON-lines caches in the folder):

==============================  ==============================================================
``README.md``                   summary: data, codecs, BD tables, quality at fixed rates,
                                visual comparison, classification, what was missing, notes
``images.csv``                  the evaluated images (name, label, shape, dtype, peak)
``rd.jsonl`` / ``per_image.csv``  one record per (codec, setting, image)
``rd_average.csv``              mean bpp / PSNR (eq. 10, fixed peak) / MS-SSIM (dB) per setting
``bd_<metric>.csv``             BD-rate (%) and BD-quality (dB) of every codec vs every anchor
``quality_at_rates.csv``        each codec's quality at fixed rates (log-rate interpolation)
``rd_<group>_<metric>.png``     RD curves: ``main`` (the paper's Figs. 8-9), ``ablation``
                                (Figs. 12-13), ``generalization`` (Fig. 14)
``bd_<group>.csv``              BD within the ablation / generalization groups vs their reference
``visual_<bpp>bpp.png`` + csv   one tile from every codec near that rate, zoomed crops (Figs. 10-11)
``classification.csv``          OA of the classifier on each codec's reconstructions (Fig. 15)
``confusion_*.png``             confusion matrices (Fig. 16)
``config.json``                 the run's configuration, for reruns
==============================  ==============================================================
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import classical as C
from .images import ImageSet
from .rd import (
    METRIC_LABELS,
    METRICS,
    ClassicalSpec,
    LearnedSpec,
    RDCache,
    average,
    bd_matrix,
    curve,
    nearest_setting,
    quality_at,
    reconstruct_near,
    run_classical,
    run_learned,
)

GROUPS = ("main", "ablation", "generalization")
GROUP_TITLES = {"main": "codec comparison (paper Figs. 8-9)",
                "ablation": "ablation: MGSSNet module sets (paper Figs. 12-13)",
                "generalization": "generalization: modules in the factorized-ReLU baseline (paper Fig. 14)"}

# reference codec of each group: BD deltas of the group are taken against it
GROUP_REFS = {"ablation": "mgssnet-baseline", "generalization": "bmshj2018-factorized"}
BASELINES = ("bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean", "mbt2018", "cheng2020-attn")
# trained as mgssnet with config modules=baseline|ssif|mhg (the full model is "mgssnet" itself)
ABLATION = {"mgssnet-baseline": "MGSSNet baseline (no attention)",
            "mgssnet-ssif": "MGSSNet (SSIF-AM)", "mgssnet-mhg": "MGSSNet (MHG-AM)"}
GENERALIZATION = {"bmshj2018-factorized-ssif": "Ballé et al. (factorized-ReLU) + SSIF-AM",
                  "bmshj2018-factorized-mhg": "Ballé et al. (factorized-ReLU) + MHG-AM",
                  "bmshj2018-factorized-lgcm": "Ballé et al. (factorized-ReLU) + LGCM"}

__all__ = ["ClassificationSetup", "ReportConfig", "paper_learned_specs", "run_report"]


def paper_learned_specs(runs: str | Path = "runs", shipped: bool = True, budget: bool = False,
                        precision: str | None = None) -> list[LearnedSpec]:
    """The paper's learned codecs, each where the trainer exports it.

    MGSSNet (shipped weights, else ``runs/mgssnet``), the five CompressAI baselines, the ablation
    module sets and the generalization variants, from ``runs/<name>/q<n>/model.pt``. Codecs without
    checkpoints stay in the list, so the report names them under *Missing* instead of dropping
    them.

    Args:
        runs: the training runs folder.
        shipped: MGSSNet from the package's shipped weights when there are any.
        budget: every codec from the budget runs, the shipped MGSSNet beside them as its own entry
            (``mgssnet-shipped``).
        precision: the learned codecs' transform precision (None: each spec's default).

    Returns:
        One :class:`LearnedSpec` per codec, with ``expected`` saying where it was looked for.
    """
    from .rd import discover_runs

    names = ["mgssnet", *BASELINES, *ABLATION, *GENERALIZATION]
    found = discover_runs(runs, names)
    specs: list[LearnedSpec] = []
    use_shipped = False
    if shipped:
        from geocompress.codec.weights import shipped_index

        use_shipped = bool(shipped_index().get("mgssnet"))
    if budget:  # every codec from the budget runs; the shipped weights beside them, as their own entry
        specs.append(LearnedSpec("mgssnet", "mgssnet", found["mgssnet"], groups=("main", "ablation"),
                                 label="MGSSNet (budget)"))
        if use_shipped:
            specs.append(LearnedSpec("mgssnet-shipped", "mgssnet", {}, shipped=True,
                                     label="MGSSNet (shipped weights)", groups=("main",)))
    else:
        specs.append(LearnedSpec("mgssnet", "mgssnet", {} if use_shipped else found["mgssnet"],
                                 shipped=use_shipped, groups=("main", "ablation")))
    for b in BASELINES:
        specs.append(LearnedSpec(b, b, found[b], groups=("main", "generalization")
                                 if b == "bmshj2018-factorized" else ("main",)))
    for n, label in ABLATION.items():
        specs.append(LearnedSpec(n, "mgssnet", found[n], label=label, groups=("ablation",)))
    for n, label in GENERALIZATION.items():
        specs.append(LearnedSpec(n, n, found[n], label=label, groups=("generalization",)))
    for s in specs:  # where a missing codec was looked for, so the report can say so
        s.expected = str(Path(runs) / s.name / "q<n>" / "model.pt")
        if precision is not None:
            s.precision = precision
    return specs


@dataclass
class ClassificationSetup:
    """Downstream classification: train on ``train`` originals, test on ``test`` reconstructions
    near ``target_bpp`` (the paper's IV-B).

    Attributes:
        train: labelled training images (originals).
        val: labelled validation images choosing the best epoch.
        test: labelled test images (None: the report's images, which must then be labelled).
        target_bpp: the rate the codecs' reconstructions are made near.
        config: a :class:`~.classifier.ClassifierConfig` (None: defaults).
        classifier: an already trained checkpoint to use instead of training one.
        codecs: the codecs to classify (None: every codec of the report).
    """

    train: ImageSet | None = None
    val: ImageSet | None = None
    test: ImageSet | None = None
    target_bpp: float = 0.8
    config: Any = None  # ClassifierConfig; None -> defaults
    classifier: str | None = None
    codecs: list[str] | None = None  # None -> every codec of the report


@dataclass
class ReportConfig:
    """Everything one report needs; see the module docstring for what it writes.

    Attributes:
        name: the report's folder name under ``out_root``.
        images: the images every codec is measured on.
        classical: classical codecs and their sweeps.
        learned: learned codecs.
        anchors: the BD tables' anchors (None: every classical codec).
        metrics: quality columns, the first one the main one (figures, verdicts).
        rates: rates of the quality-at-rates table.
        visual_bpp: rate of the visual comparison (None: none).
        visual_image: its tile (None: a detailed one, chosen automatically).
        classification: downstream classification (None: none).
        out_root: the reports folder.
        progress: progress messages and bars on stderr.
        device: torch device of the learned codecs.
        command: the command line that made the report, quoted in the README.
        threads: torch threads for the learned codecs (None: as is).
        group_refs: each figure group's reference codec for its BD table.
        budget: the training budget every learned codec had, ``{"protocol": {...}, "models":
            {name: cost}}``, for the README's budget section and "what wins" (None: none).
    """

    name: str
    images: ImageSet
    classical: list[ClassicalSpec] = field(default_factory=list)
    learned: list[LearnedSpec] = field(default_factory=list)
    anchors: list[str] | None = None          # None -> every classical codec
    metrics: tuple[str, ...] = METRICS
    rates: tuple[float, ...] = (0.25, 0.5, 1.0)
    visual_bpp: float | None = 0.3
    visual_image: str | None = None
    classification: ClassificationSetup | None = None
    out_root: Path = Path("reports")
    progress: bool = True
    device: str = "cpu"
    command: str | None = None
    threads: int | None = None                # torch threads for the learned codecs (None: as is)
    group_refs: dict[str, str] = field(default_factory=lambda: dict(GROUP_REFS))
    # the training budget every learned codec had: {"protocol": {...}, "models": {name: cost}}
    budget: dict[str, Any] | None = None


# ------------------------------------------------------------------------------------------ helpers

def _say(cfg: ReportConfig, msg: str) -> None:
    if cfg.progress:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str] | None = None) -> Path:
    fields = list(fields or (list(rows[0]) if rows else []))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt_csv(r.get(k)) for k in fields})
    return path


def _fmt_csv(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else (f"{v:.6g}" if abs(v) < 1e6 else v)
    return v


def _num(v: float, digits: int = 2, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _setting(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _environment() -> dict[str, str]:
    env = {"python": platform.python_version(), "machine": f"{platform.machine()} {platform.system()}"}
    for mod in ("torch", "compressai", "imagecodecs", "pillow_heif", "PIL", "bjontegaard"):
        try:
            m = __import__(mod)
            env[mod] = str(getattr(m, "__version__", "?"))
        except Exception:  # noqa: BLE001 - optional packages
            env[mod] = "not installed"
    try:
        import pillow_heif

        info = pillow_heif.libheif_info()
        env["libheif"] = str(info.get("libheif", info.get("version", "?")))
    except Exception:  # noqa: BLE001
        pass
    return env


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------- run

@dataclass(frozen=True)
class _Run:
    """What every step of one report reads: its config and folder, and the codecs that ran
    (classical: those available here; learned: those that produced records)."""

    cfg: ReportConfig
    out: Path
    classical: list[ClassicalSpec]
    learned: list[LearnedSpec]
    labels: dict[str, str]  # codec name -> its label on tables and figures

    @property
    def images(self) -> ImageSet:
        return self.cfg.images


@dataclass(frozen=True)
class _Results:
    """What the README summarises, in the order the steps of :func:`_run` measured it."""

    rows: list[dict[str, Any]]                    # averaged RD points (``rd_average.csv``)
    bd: dict[str, list[dict[str, Any]]]           # metric -> BD of every codec vs every anchor
    at_rates: list[dict[str, Any]]                # quality at ``cfg.rates``
    anchors: list[str]
    figures: dict[str, list[str]]                 # group -> its RD figure files
    group_bd: dict[str, list[dict[str, Any]]]     # ablation / generalization group -> BD vs its ref
    visual: dict[str, Any] | None
    classification: dict[str, Any] | None
    missing: list[str]


def run_report(cfg: ReportConfig) -> Path:
    """Measure everything ``cfg`` asks for and write ``<out_root>/<name>/``.

    Every step resumes from the JSON-lines caches in that folder, so an interrupted or extended
    report (more codecs, more images) only measures what is new.

    Args:
        cfg: the report: images, codecs, metrics, rates and what else to write (see
            :class:`ReportConfig` and the module docstring for the files).

    Returns:
        The report folder, ``cfg.out_root / cfg.name``.

    Raises:
        ValueError: ``cfg.images`` is empty, or classification was asked for without labelled
            test images or without training images / a trained classifier.
        KeyError: a classical codec name is not registered (checked before any work).
    """
    if not cfg.threads:
        return _run(cfg)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(cfg.threads))
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(before)


def _run(cfg: ReportConfig) -> Path:
    """The report's steps in order: set up, measure RD, BD tables, group figures, visual
    comparison, classification, README."""
    out, classical, unavailable = _prepare(cfg)
    records, learned_ok, missing = _measure_rd(cfg, out, classical, unavailable)
    labels = {s.codec: s.label for s in classical} | {s.name: s.display for s in cfg.learned}
    run = _Run(cfg, out, classical, learned_ok, labels)
    rows = average(records)
    _write_csv(out / "rd_average.csv", rows, ["codec", "kind", "setting", "images", "failed", "bpp",
                                              "psnr", "psnr_paper", "ms_ssim", "ms_ssim_db",
                                              "enc_s", "dec_s", "min_bytes"])
    bd, at_rates, anchors = _bd_tables(run, rows)
    figures, group_bd = _group_figures(run, rows)

    visual = None
    if cfg.visual_bpp:
        _say(cfg, f"visual comparison near {cfg.visual_bpp} bpp")
        visual = _visual(run, records)
    classification = None
    if cfg.classification is not None:
        classification = _classification(run, records)

    _write_readme(run, _Results(rows, bd, at_rates, anchors, figures, group_bd, visual,
                                classification, missing))
    _say(cfg, f"report written to {out}")
    return out


def _prepare(cfg: ReportConfig) -> tuple[Path, list[ClassicalSpec], list[str]]:
    """The report folder with ``config.json`` and ``images.csv``; (folder, the classical codecs
    available here, the names of those that are not)."""
    out = Path(cfg.out_root) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    images = cfg.images
    if not len(images):
        raise ValueError(f"no images to evaluate in {images.description or images.name}")
    for s in cfg.classical:
        C.get_codec(s.codec)  # unknown names fail before any work
    unavailable = [s.codec for s in cfg.classical if not C.get_codec(s.codec).available]
    classical = [s for s in cfg.classical if s.codec not in unavailable]
    _write_config(out, cfg)
    _write_csv(out / "images.csv", [{"name": im.name, "label": im.label or "",
                                     "shape": "x".join(map(str, im.pixels.shape)),
                                     "dtype": str(im.pixels.dtype), "peak": im.peak} for im in images])
    return out, classical, unavailable


def _measure_rd(cfg: ReportConfig, out: Path, classical: list[ClassicalSpec], unavailable: list[str]
                ) -> tuple[list[dict[str, Any]], list[LearnedSpec], list[str]]:
    """Per-image RD records of every codec (``rd.jsonl``, ``per_image.csv``); (records, the
    learned codecs that produced any, what was missing)."""
    images = cfg.images
    cache = RDCache(out / "rd.jsonl")
    _say(cfg, f"{cfg.name}: {len(images)} images, {len(classical)} classical + "
              f"{len(cfg.learned)} learned codecs")
    records: list[dict[str, Any]] = []
    for s in classical:
        records += run_classical(s, images, cache, progress=cfg.progress)
    missing: list[str] = [f"{c}: codec not available in this environment" for c in unavailable]
    learned_ok: list[LearnedSpec] = []
    if cfg.learned:
        from geocompress.codec import WeightsError
    for s in cfg.learned:
        try:
            recs, miss = run_learned(s, images, cache, progress=cfg.progress, device=cfg.device)
        except (ValueError, WeightsError) as e:  # unknown architecture, damaged checkpoint
            recs, miss = [], [f"{s.name}: {e}"]
        records += recs
        missing += miss
        if recs:
            learned_ok.append(s)
    _write_csv(out / "per_image.csv", records,
               ["codec", "kind", "setting", "image", "label", "bytes", "bpp", "psnr", "psnr_paper",
                "ms_ssim", "ms_ssim_db", "enc_s", "dec_s", "error"])
    return records, learned_ok, missing


def _bd_tables(run: _Run, rows: list[dict[str, Any]]
               ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]], list[str]]:
    """``bd_<metric>.csv`` (every codec vs every anchor) and ``quality_at_rates.csv``;
    (BD rows per metric, quality-at-rate rows, the anchors used)."""
    cfg = run.cfg
    codecs = [s.codec for s in run.classical] + [s.name for s in run.learned]
    anchors = [a for a in (cfg.anchors or [s.codec for s in run.classical]) if a in codecs]
    bd: dict[str, list[dict[str, Any]]] = {}
    for m in cfg.metrics:
        bd[m] = bd_matrix(rows, codecs, anchors, m)
        _write_csv(run.out / f"bd_{m}.csv", bd[m])
    at_rates = [{"codec": c, "metric": m, **{f"{r:g}bpp": v for r, v in
                                             zip(cfg.rates, quality_at(rows, c, m, cfg.rates))}}
                for c in codecs for m in cfg.metrics]
    _write_csv(run.out / "quality_at_rates.csv", at_rates)
    return bd, at_rates, anchors


def _group_figures(run: _Run, rows: list[dict[str, Any]]
                   ) -> tuple[dict[str, list[str]], dict[str, list[dict[str, Any]]]]:
    """RD figures of each group (``rd_<group>_<metric>.png``) and the ablation / generalization
    groups' BD against their reference (``bd_<group>.csv``); (figure files, group BD rows)."""
    from .figures import plot_rd

    cfg, labels = run.cfg, run.labels
    figures: dict[str, list[str]] = {}
    group_bd: dict[str, list[dict[str, Any]]] = {}
    for g in GROUPS:
        members = [s.name for s in run.learned if g in s.groups]
        if g == "main":
            members = [s.codec for s in run.classical] + members
        if len(members) == 0 or (g != "main" and len(members) < 2):
            continue
        for m in cfg.metrics:
            curves = {labels[c]: curve(rows, c, m, monotone=False) for c in members}
            p = plot_rd(curves, run.out / f"rd_{g}_{m}.png", METRIC_LABELS[m],
                        f"{run.images.name}: {GROUP_TITLES[g]}",
                        dashed=[labels[s.codec] for s in run.classical])
            figures.setdefault(g, []).append(p.name)
        if g != "main":
            ref = cfg.group_refs.get(g)
            ref = ref if ref in members else members[0]
            group_bd[g] = [r for m in cfg.metrics for r in bd_matrix(rows, members, [ref], m)]
            _write_csv(run.out / f"bd_{g}.csv", group_bd[g])
    return figures, group_bd


def _write_config(out: Path, cfg: ReportConfig) -> None:
    d = {"name": cfg.name, "images": {"name": cfg.images.name, "description": cfg.images.description,
                                      "count": len(cfg.images)},
         "classical": [{"codec": s.codec, "grid": list(s.settings())} for s in cfg.classical],
         "learned": [{k: getattr(s, k) for k in ("name", "arch", "checkpoints", "shipped", "untrained",
                                                  "config", "label", "groups", "precision", "expected")}
                     for s in cfg.learned],
         "anchors": cfg.anchors, "metrics": list(cfg.metrics), "rates": list(cfg.rates),
         "visual_bpp": cfg.visual_bpp, "visual_image": cfg.visual_image, "command": cfg.command,
         "classification": None if cfg.classification is None else {
             "target_bpp": cfg.classification.target_bpp, "classifier": cfg.classification.classifier,
             "train": cfg.classification.train.description if cfg.classification.train else None,
             "test": cfg.classification.test.description if cfg.classification.test else None,
             "config": asdict(cfg.classification.config) if cfg.classification.config else None}}
    (out / "config.json").write_text(json.dumps(d, indent=1, default=str) + "\n")


def _detail(img) -> float:
    g = img.pixels.astype(np.float64).mean(axis=0)
    return float(np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean())


def _visual(run: _Run, records: list[dict[str, Any]]) -> dict[str, Any]:
    """``visual_<bpp>bpp.png`` / ``.csv``: one tile from every codec near ``cfg.visual_bpp``;
    returns the tile's name, the figure's file name and one row per codec."""
    from .figures import plot_visual

    cfg, images = run.cfg, run.images
    if cfg.visual_image:
        im = images.by_name(cfg.visual_image)
    else:  # a detailed but not extreme tile (75th percentile of gradient energy): codecs differ there
        ranked = sorted(images, key=_detail)
        im = ranked[min(len(ranked) - 1, int(0.75 * len(ranked)))]
    panels, rows = [], []
    for s in list(run.classical) + list(run.learned):
        recon, rec = reconstruct_near(s, [im], cfg.visual_bpp, records, per_image=True,
                                      device=cfg.device)[0]
        name = s.codec if isinstance(s, ClassicalSpec) else s.name
        panels.append({**rec, "label": run.labels[name], "image": np.moveaxis(recon, 0, -1)})
        rows.append({"codec": name, "setting": rec["setting"], "bpp": rec["bpp"], "psnr": rec["psnr"],
                     "psnr_paper": rec["psnr_paper"], "ms_ssim_db": rec["ms_ssim_db"]})
    tag = f"{cfg.visual_bpp:g}"
    fig = plot_visual(im.hwc, panels, run.out / f"visual_{tag}bpp.png", peak=im.peak,
                      crop=max(16, min(im.pixels.shape[1:]) // 4),
                      title=f"{im.name}: every codec near {tag} bpp")
    _write_csv(run.out / f"visual_{tag}bpp.csv", rows)
    return {"image": im.name, "figure": fig.name, "rows": rows}


# ---------------------------------------------------------------------------------- classification

@dataclass(frozen=True)
class _Classify:
    """One trained classifier against every codec's reconstructions of one labelled test set;
    its predictions are cached per (codec, target, image) under the weights that made them."""

    clf: Any                        # a trained .classifier.Classifier
    digest: str                     # of the classifier's checkpoint
    test: ImageSet
    records: list[dict[str, Any]]   # RD records of the test images: learned qualities are chosen on them
    cache: RDCache
    target_bpp: float
    device: str

    @property
    def key(self) -> str:
        return f"@{self.target_bpp:g}"

    def identity(self, spec: Any) -> str:
        """Classifier + (learned) the weights of the quality the codec will use: a retrained codec,
        or a different quality nearest the target, is classified again, never served from cache."""
        if not isinstance(spec, LearnedSpec):
            return self.digest
        found, _ = spec.available()
        q = nearest_setting(self.records, spec.name, self.target_bpp)
        if q is None or int(q) not in found:
            return self.digest
        return f"{self.digest}|q{int(q)}|{spec.source_id(int(q), found[int(q)])}"

    def done(self, codec: str, ident: str) -> list[dict[str, Any]] | None:
        rs = [self.cache.get(codec, self.key, im.name, ident) for im in self.test]
        return rs if all(r is not None for r in rs) else None

    def predict(self, name: str, spec: Any, ident: str) -> list[dict[str, Any]]:
        """Reconstruct the test set with ``spec`` (None: the originals) near the target and
        classify it; one cached record per image."""
        if spec is None:
            recs = [(im.pixels, {"bpp": float("nan"), "setting": "original"}) for im in self.test]
        else:
            recs = reconstruct_near(spec, list(self.test), self.target_bpp, self.records,
                                    per_image=False, device=self.device)
        pred = self.clf.predict([x for x, _ in recs])
        rs = []
        for im, (x, rec), p in zip(self.test, recs, pred):
            r = {"codec": name, "setting": self.key, "image": im.name, "digest": ident,
                 "label": im.label, "pred": self.clf.classes[int(p)], "bpp": rec.get("bpp"),
                 "codec_setting": rec.get("setting"), "psnr_paper": rec.get("psnr_paper")}
            self.cache.add(r)
            rs.append(r)
        return rs


def _classification(run: _Run, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Downstream classification near ``cfg.classification.target_bpp`` (``classification.csv``,
    confusion matrices); returns what the README and the verdicts read."""
    from .classifier import load_classifier

    cs = run.cfg.classification
    test = cs.test if cs.test is not None else run.images
    if not test.labelled():
        raise ValueError("classification needs labelled test images (class folders / dataset classes)")
    path = _classifier_path(run)
    clf = load_classifier(path)
    names = {im.name for im in test}  # learned qualities are chosen on these images' own rates
    job = _Classify(clf, _file_digest(path), test,
                    [r for r in records if r["image"] in names] or records,
                    RDCache(run.out / "classification.jsonl"), cs.target_bpp, run.cfg.device)
    results, cms, correct = _classify_codecs(run, job)
    rows = list(results.values())
    _write_csv(run.out / "classification.csv", rows, ["codec", "oa", "bpp", "settings", "images"])
    figs = _write_confusions(run, clf.classes, cms, results)
    return {"rows": rows, "figures": figs, "classifier": str(path), "meta": clf.meta, "correct": correct,
            "test": test.description, "target_bpp": cs.target_bpp}


def _classifier_path(run: _Run) -> Path:
    """The classifier checkpoint to use: the one given, else one trained (resumably) on the
    setup's training images in ``<report>/classifier``."""
    from .classifier import ClassifierConfig, train_classifier

    cs = run.cfg.classification
    if cs.classifier:
        return Path(cs.classifier)
    if cs.train is None:
        raise ValueError("classification needs training images or a trained classifier")
    _say(run.cfg, f"classifier: training on {len(cs.train)} original tiles (resumable)")
    return train_classifier(cs.train, cs.val, run.out / "classifier", cs.config or ClassifierConfig(),
                            classes=cs.train.classes or None, progress=run.cfg.progress)


def _classify_codecs(run: _Run, job: _Classify
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray], dict[str, list[bool]]]:
    """OA, confusion matrix and per-image correctness of the originals and of every codec's
    reconstructions (cached predictions reused); (summary row, confusion matrix, correctness)
    per codec."""
    from tqdm.auto import tqdm

    from .classifier import confusion_matrix, overall_accuracy

    clf, cs = job.clf, run.cfg.classification
    y = np.array([clf.classes.index(im.label) for im in job.test])
    specs: list[tuple[str, Any]] = [("original", None)] + [(s.codec, s) for s in run.classical] + \
                                   [(s.name, s) for s in run.learned]
    if cs.codecs is not None:
        specs = [(n, s) for n, s in specs if n == "original" or n in cs.codecs]
    results: dict[str, dict[str, Any]] = {}
    cms: dict[str, np.ndarray] = {}
    correct: dict[str, list[bool]] = {}
    for name, spec in tqdm(specs, desc="classification", disable=not run.cfg.progress, leave=False):
        ident = job.identity(spec)
        rs = job.done(name, ident)
        if rs is None:
            rs = job.predict(name, spec, ident)
        p = np.array([clf.classes.index(r["pred"]) for r in rs])
        cms[name] = confusion_matrix(y, p, len(clf.classes))
        bpps = np.array([r["bpp"] for r in rs if r["bpp"] is not None], dtype=np.float64)
        settings = sorted({_setting(r["codec_setting"]) for r in rs})
        correct[name] = [bool(c) for c in (p == y)]
        results[name] = {"codec": name, "oa": overall_accuracy(y, p),
                         "bpp": float(np.nanmean(bpps)) if np.isfinite(bpps).any() else float("nan"),
                         "settings": ";".join(settings) if len(settings) <= 3 else f"{len(settings)} per-image",
                         "images": len(rs)}
    return results, cms, correct


def _write_confusions(run: _Run, classes: list[str], cms: dict[str, np.ndarray],
                      results: dict[str, dict[str, Any]]) -> list[str]:
    """``confusion_<codec>.csv`` / ``.png`` per codec and ``confusions.png`` of all; returns the
    per-codec figure names."""
    from .figures import plot_confusion, plot_confusions

    out = run.out
    figs = []
    disp = {n: ("Original" if n == "original" else run.labels.get(n, n)) for n in cms}
    for n, cm in cms.items():
        np.savetxt(out / f"confusion_{n}.csv", cm, fmt="%d", delimiter=",",
                   header=",".join(classes), comments="")
        figs.append(plot_confusion(cm, classes, out / f"confusion_{n}.png",
                                   f"{disp[n]}: OA {results[n]['oa']:.3f}").name)
    plot_confusions({f"{disp[n]} (OA {results[n]['oa']:.3f})": cm for n, cm in cms.items()},
                    classes, out / "confusions.png")
    return figs


# -------------------------------------------------------------------------------------------- readme

def _write_readme(run: _Run, res: _Results) -> None:
    """``README.md``: every section below, in the order a reader needs them."""
    cfg = run.cfg
    L = _readme_intro(run) + _readme_codecs(run, res.rows)
    if cfg.budget:
        L += _budget_section(cfg.budget, res.rows, run.labels, run.learned)
    L += _verdict_section(res.rows, run.labels, res.classification, cfg.metrics[0], run.learned,
                          cfg.budget)
    L += _readme_bd(run, res) + _readme_at_rates(run, res) + _readme_groups(run, res)
    if res.visual:
        L += _readme_visual(run, res.visual)
    if res.classification:
        L += _readme_classification(run, res.classification)
    L += ["## Missing", ""]
    L += [f"- {m}" for m in res.missing] if res.missing else ["Nothing: every requested codec was measured."]
    L += ["", "## Environment", ""]
    L += [f"- {k}: {v}" for k, v in _environment().items()]
    (run.out / "README.md").write_text("\n".join(L) + "\n")


def _readme_intro(run: _Run) -> list[str]:
    """Title, the images, when and how the report was made, and how rate and quality are measured."""
    cfg, images = run.cfg, run.images
    L: list[str] = [f"# Evaluation report `{cfg.name}`", ""]
    L += [f"Images: **{len(images)}** — {images.description}.",
          f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}"
          + (f" by `{cfg.command}`" if cfg.command else "") + ".", ""]
    L += ["Rate is every byte of each file / tile string over H x W (bpp). Quality: PSNR eq. (10) "
          "(per band, peak = that band's maximum in the original, averaged over bands), fixed-peak "
          "PSNR (255 for 8 bit), MS-SSIM in dB (eq. 11). Each point is the mean over the images at "
          "one codec setting. BD-rate / BD-quality: Bjøntegaard deltas, piecewise cubic (pchip, the "
          "JVET method) via the `bjontegaard` package, on each codec's averaged curve (points that "
          "do not raise both rate and quality are left out), over the two curves' shared range only "
          "(`rate_overlap` in the csv files: the shared fraction of the shorter curve's log-rate "
          "range); negative BD-rate = fewer bits than the anchor for the same quality.", ""]
    return L


def _readme_codecs(run: _Run, rows: list[dict[str, Any]]) -> list[str]:
    """## Codecs: settings, rate range, smallest file and failures of each codec."""
    labels = run.labels
    L = ["## Codecs", ""]
    crow = []
    smallest: dict[str, int] = {}  # a file's fixed cost (container, headers), in every rate
    for r in rows:
        if r.get("min_bytes"):
            smallest[r["codec"]] = min(smallest.get(r["codec"], r["min_bytes"]), r["min_bytes"])
    for s in run.classical:
        pts = [r for r in rows if r["codec"] == s.codec]
        bpps = [r["bpp"] for r in pts if math.isfinite(r["bpp"])]
        crow.append([labels[s.codec], "classical", ", ".join(f"{p:g}" for p in s.settings()),
                     f"{min(bpps):.3f} - {max(bpps):.3f}" if bpps else "n/a",
                     smallest.get(s.codec, "n/a"), max((r["failed"] for r in pts), default=0)])
    for s in run.learned:
        pts = [r for r in rows if r["codec"] == s.name]
        bpps = [r["bpp"] for r in pts if math.isfinite(r["bpp"])]
        crow.append([labels[s.name], f"learned ({s.arch or s.name}{', untrained' if s.untrained else ''})",
                     ", ".join(f"q{r['setting']}" for r in sorted(pts, key=lambda r: r["bpp"])),
                     f"{min(bpps):.3f} - {max(bpps):.3f}" if bpps else "n/a",
                     smallest.get(s.name, "n/a"), 0])
    L += _md_table(["codec", "kind", "settings", "bpp range", "smallest file (bytes)",
                    "failed images"], crow) + [""]
    L += ["The smallest file of each codec bounds its fixed cost per image (container, headers), "
          "which every rate above includes: HEIF (`bpg-hevc`) and AVIF carry an ISOBMFF container of "
          "a few hundred bytes, ~0.04 bpp at 256 x 256, a large share of the lowest rates.", ""]
    if any(s.codec == "bpg-hevc" for s in run.classical):
        L += ["**BPG**: there is no `bpgenc` package in this environment. BPG's coding tool is HEVC "
              "intra; `bpg-hevc` runs it through libheif + x265 with bpgenc's settings (constant QP, "
              "preset veryslow, tune ssim, 4:2:0) and stores it in a HEIF file whose container "
              "(~370 bytes at 256 x 256, ~0.045 bpp) is counted in the rate; a .bpg header is a few "
              "bytes, so BPG itself would sit slightly to the left of this curve.", ""]
    return L


def _readme_bd(run: _Run, res: _Results) -> list[str]:
    """## BD-rate vs anchors, one section per metric: BD-rate and BD-quality matrices."""
    labels, anchors, main_metric = run.labels, res.anchors, run.cfg.metrics[0]
    L: list[str] = []
    for m in run.cfg.metrics:
        if not res.bd.get(m) or not anchors:
            continue
        tests = [c for c in labels if any(r["test"] == c for r in res.bd[m])]
        L += [f"## BD-rate vs anchors — {METRIC_LABELS[m]}", ""]
        table = {(r["test"], r["anchor"]): r for r in res.bd[m]}
        L += ["BD-rate (%), row codec against column anchor:", ""]
        L += _md_table(["codec \\ anchor"] + [labels[a] for a in anchors],
                       [[labels[t]] + [("—" if t == a else _num(table[(t, a)]["bd_rate_pct"], 1, True))
                                       for a in anchors] for t in tests]) + [""]
        L += [f"BD-{'PSNR' if m.startswith('psnr') else 'MS-SSIM'} (dB), row codec against column anchor:", ""]
        L += _md_table(["codec \\ anchor"] + [labels[a] for a in anchors],
                       [[labels[t]] + [("—" if t == a else _num(table[(t, a)]["bd_quality_db"], 2, True))
                                       for a in anchors] for t in tests]) + [""]
        L += ["n/a: the two curves share no quality range (BD-rate) or no rate range (BD-quality), "
              "or one has fewer than two points that raise both rate and quality; Bjøntegaard deltas "
              "do not extrapolate. All pairs, with their shared rate range: "
              f"[`bd_{m}.csv`](bd_{m}.csv)."]
        if m == main_metric:
            L += ["", f"![RD {m}](rd_main_{m}.png)"]
        L += [""]
    return L


def _readme_at_rates(run: _Run, res: _Results) -> list[str]:
    """## Quality at fixed rates, one table per metric, and links to the data and figures."""
    cfg = run.cfg
    L = ["## Quality at fixed rates", ""]
    for m in cfg.metrics:
        L += [f"{METRIC_LABELS[m]}:", ""]
        L += _md_table(["codec"] + [f"{r:g} bpp" for r in cfg.rates],
                       [[run.labels[r["codec"]]] + [_num(r[f"{x:g}bpp"]) for x in cfg.rates]
                        for r in res.at_rates if r["metric"] == m]) + [""]
    L += ["Averaged points: [`rd_average.csv`](rd_average.csv); per image: "
          "[`per_image.csv`](per_image.csv). Figures: "
          + ", ".join(f"[`{f}`]({f})" for fs in res.figures.values() for f in fs) + ".", ""]
    return L


def _readme_groups(run: _Run, res: _Results) -> list[str]:
    """The ablation and generalization sections: BD of each member against the group's reference."""
    labels = run.labels
    L: list[str] = []
    for g in ("ablation", "generalization"):
        L += [f"## {GROUP_TITLES[g][0].upper() + GROUP_TITLES[g][1:]}", ""]
        if g not in res.group_bd:
            L += [f"Not measured: fewer than two {g} codecs had checkpoints (see *Missing*).", ""]
            continue
        ref = res.group_bd[g][0]["anchor"]
        L += [f"Against {labels[ref]}:", ""]
        L += _md_table(["codec", "metric", "BD-rate %", "BD-quality dB"],
                       [[labels[r["test"]], r["metric"], _num(r["bd_rate_pct"], 1, True),
                         _num(r["bd_quality_db"], 2, True)] for r in res.group_bd[g]]) + [""]
        L += [f"![{g}](rd_{g}_{run.cfg.metrics[0]}.png)", ""]
    return L


def _readme_visual(run: _Run, visual: dict[str, Any]) -> list[str]:
    """## Visual comparison: the tile, each codec's point near the rate, the figure."""
    L = [f"## Visual comparison near {run.cfg.visual_bpp:g} bpp", "",
         f"Tile `{visual['image']}`; classical codecs hit the rate per image (largest file at "
         f"or under it), learned codecs use their quality nearest to it. Crops: the most "
         f"detailed window in the upper-left and the lower-right half.", ""]
    L += _md_table(["codec", "setting", "bpp", "PSNR eq.10", "PSNR", "MS-SSIM dB"],
                   [[run.labels[r["codec"]], _setting(r["setting"]), _num(r["bpp"], 4), _num(r["psnr_paper"]),
                     _num(r["psnr"]), _num(r["ms_ssim_db"])] for r in visual["rows"]]) + [""]
    L += [f"![visual]({visual['figure']})", ""]
    return L


def _readme_classification(run: _Run, classification: dict[str, Any]) -> list[str]:
    """## Downstream classification: the classifier, OA and rate of each codec, the confusions."""
    meta = classification["meta"]
    L = [f"## Downstream classification near {classification['target_bpp']:g} bpp", "",
         f"Classifier: {meta.get('arch', 'ResNet-18')} trained from scratch on "
         f"{meta.get('train_images', '?')} original tiles (validation accuracy "
         f"{_num(meta.get('val_acc') if meta.get('val_acc') is not None else float('nan'), 3)}; "
         f"config {json.dumps(meta.get('config', {}))}). Test: {classification['test']}. "
         f"Classical codecs are coded per tile at or under the target rate; each learned codec "
         f"uses its one quality whose mean bpp is nearest the target.", ""]
    target = classification["target_bpp"]

    def far(bpp: float) -> str:  # a learned codec whose qualities do not reach the target
        return "" if not math.isfinite(bpp) or 0.75 * target <= bpp <= 1.25 * target else \
            " (far from the target)"

    L += _md_table(["codec", "OA", "mean bpp", "setting(s)"],
                   [["Original" if r["codec"] == "original" else run.labels.get(r["codec"], r["codec"]),
                     _num(r["oa"], 4), _num(r["bpp"], 3) + far(r["bpp"]), r["settings"]]
                    for r in classification["rows"]]) + [""]
    L += ["![confusion matrices](confusions.png)", ""]
    return L


def _speed(rows: list[dict[str, Any]], codec: str) -> tuple[float, float]:
    pts = [r for r in rows if r["codec"] == codec]
    enc = [r["enc_s"] for r in pts if math.isfinite(r.get("enc_s", math.nan))]
    dec = [r["dec_s"] for r in pts if math.isfinite(r.get("dec_s", math.nan))]
    return (float(np.mean(enc)) if enc else math.nan, float(np.mean(dec)) if dec else math.nan)


def _budget_section(budget: dict[str, Any], rows: list[dict[str, Any]], labels: dict[str, str],
                    learned: list[LearnedSpec]) -> list[str]:
    """The one training protocol, and what each model cost under it."""
    pr = budget.get("protocol", {})
    hw = pr.get("machine", {})
    lams = ", ".join(f"{v:g}" for v in pr.get("lambdas", []))
    shipped = ""
    if budget.get("shipped_steps"):
        lo, hi = budget["shipped_steps"]
        shipped = (f": the shipped MGSSNet weights had {lo:,} - {hi:,} steps per quality "
                   f"(`catalogs/models/mgssnet.md`)")
    L = ["## Training budget", "",
         f"Every learned codec but the shipped MGSSNet weights was trained by the same protocol "
         f"(`pipelines/train_budget.py`): the project's train split, batch {pr.get('batch')} of "
         f"{pr.get('crop')} x {pr.get('crop')} crops, Adam lr {pr.get('lr'):g} (aux {pr.get('aux_lr'):g}), "
         f"{pr.get('quantization')} quantization, seed {pr.get('seed')}; a base run of "
         f"{pr.get('base_steps')} steps at lambda {pr.get('lambdas', [0, 0])[pr.get('base_quality', 2) - 1]:g}, "
         f"then {pr.get('branch_steps')} steps at each lambda ({lams}, CompressAI convention) from that "
         f"base state: **{pr.get('base_steps', 0) + pr.get('branch_steps', 0)} steps behind every "
         f"checkpoint, {pr.get('base_steps', 0) + len(pr.get('lambdas', [])) * pr.get('branch_steps', 0)} "
         f"per model**, widths N=64 / M=96 for all (cheng2020-attn N=64). Two single-threaded runs "
         f"side by side on the 2-core CPU ({hw.get('cpu', 'CPU')}, {hw.get('cpu_capability', '')}), "
         f"{hw.get('precision', 'per-layer bf16 mixed')} precision. This is a short budget{shipped}; "
         f"the verdicts below are verdicts *at this budget*.",
         "", "Training wall time is each model's own (base + its three branches), two runs sharing the "
         "2 cores (and at times the evaluation beside them), so compare it between models only roughly; "
         "quiet per-step times are in `catalogs/benchmarks.md` (`train_speed.py`). Encode / decode "
         "seconds per 256 x 256 tile are means over the test tiles through the real codec (entropy "
         "coding included), 1 thread, measured while other work shared the machine.", ""]
    table = []
    for s in learned:
        cost = budget.get("models", {}).get(s.name)
        enc, dec = _speed(rows, s.name)
        if cost is None and not s.shipped:
            continue
        table.append([labels.get(s.name, s.name),
                      "shipped (see catalogs/models/mgssnet.md)" if s.shipped else cost["steps"],
                      "—" if s.shipped else f"{cost['wall_s'] / 60:.1f}",
                      _num(enc, 3), _num(dec, 3)])
    L += _md_table(["codec", "training steps per model", "training wall (min)",
                    "encode s / tile", "decode s / tile"], table) + [""]
    return L


def _verdict_section(rows: list[dict[str, Any]], labels: dict[str, str],
                     classification: dict[str, Any] | None, metric: str,
                     learned: list[LearnedSpec], budget: dict[str, Any] | None) -> list[str]:
    """The paper's claims, one row each; then which codecs beat MGSSNet (what to ship)."""
    from .verdicts import ALPHA, RD_TOLERANCE_DB, classification_verdicts, rd_verdicts

    vs = rd_verdicts(rows, labels, metric)
    if classification:
        vs += classification_verdicts(classification.get("correct", {}), labels,
                                      {r["codec"]: r["bpp"] for r in classification.get("rows", [])})
    if not vs:
        return []
    L = ["## Verdicts", "",
         f"Claim by claim ({METRIC_LABELS.get(metric, metric)}; RD claims decided beyond "
         f"{RD_TOLERANCE_DB:g} dB of BD-PSNR, classification by McNemar's exact test at "
         f"p < {ALPHA:g}; `geocompress/evaluation/verdicts.py`):", ""]
    L += _md_table(["claim", "paper", "measured", "verdict"],
                   [[v.claim, v.paper, v.measured, f"**{v.verdict}**"] for v in vs]) + [""]
    if budget and any(r["codec"] == "mgssnet" for r in rows):
        from .verdicts import BASELINES, bd_delta

        wins, open_wall = [], []
        for b in BASELINES:
            if not any(r["codec"] == b for r in rows):
                continue
            _, db, _ = bd_delta(rows, b, "mgssnet", metric)
            cb, cm = budget.get("models", {}).get(b), budget.get("models", {}).get("mgssnet")
            cheaper = bool(cb and cm and cb["wall_s"] <= cm["wall_s"])
            if math.isfinite(db) and db > RD_TOLERANCE_DB:
                wins.append(f"- {labels.get(b, b)}: {db:+.2f} dB BD-PSNR over MGSSNet at equal steps"
                            + ("; it also trained in less wall time, so it wins at equal wall time too"
                               if cheaper else "") + ".")
            elif cheaper and math.isfinite(db):
                # equal steps favour MGSSNet here, but the baseline could take more steps in
                # MGSSNet's wall time: only training it that long decides
                open_wall.append(f"- {labels.get(b, b)}: {db:+.2f} dB BD-PSNR against MGSSNet at "
                                 f"equal steps, in {100 * cb['wall_s'] / cm['wall_s']:.0f} % of its "
                                 f"training wall time; at equal wall time it would have had more "
                                 f"steps, so that comparison is **not decided** by this budget.")
        L += ["### What wins at this budget", ""]
        L += wins or ["No baseline beats MGSSNet at equal steps by more than the tolerance."]
        if open_wall:
            L += ["", "At equal wall time:", ""] + open_wall
        L += [""]
    return L
