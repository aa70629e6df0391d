"""The evaluation report end to end, tiny: 3 images, 2 classical codecs, one untrained learned codec.

Checks that every table and figure of the report is written, that the numbers are those of the
codecs (rates hit, quality rising with rate, BD deltas finite and of the right sign), that a rerun
resumes from the caches without recomputing, and that the CLI hook builds the same report.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geocompress import metrics as M
from geocompress.evaluation import classical as C
from geocompress.evaluation.classifier import (
    ClassifierConfig,
    confusion_matrix,
    overall_accuracy,
)
from geocompress.evaluation.images import load_folder, load_images, load_zarr
from geocompress.evaluation.rd import (
    ClassicalSpec,
    LearnedSpec,
    RDCache,
    average,
    curve,
)
from geocompress.evaluation.report import ClassificationSetup, ReportConfig, run_report

from .conftest import natural_tile

SIZE = 176  # > 160: MS-SSIM's five scales need it
CODECS = [c for c in ("jpeg2000", "webp") if c in C.available_codecs()]
GRIDS = {"jpeg2000": (0.25, 0.5, 1.0, 2.0), "webp": (10, 50, 80, 95)}


def _image(seed: int) -> np.ndarray:
    """Imagery-like tile: smooth field, edges and texture, C x H x W uint8."""
    t = natural_tile(SIZE, SIZE, 3, seed=seed).astype(np.int16)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        r, c = rng.integers(0, SIZE - 40, size=2)
        t[:, r:r + 30, c:c + 40] = rng.integers(20, 235, size=(3, 1, 1))
    return np.clip(t, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes of images (``fields``: 2, ``town``: 1), as UC Merced lays them out."""
    root = tmp_path_factory.mktemp("imgs") / "tiny"
    for k, (label, name) in enumerate([("fields", "a"), ("fields", "b"), ("town", "c")]):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.moveaxis(_image(k), 0, -1)).save(root / label / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def report(folder, tmp_path_factory):
    """The tiny report, built once; returns (folder, config)."""
    if len(CODECS) < 2:
        pytest.skip("needs JPEG 2000 and WebP")
    images = load_folder(folder)
    cfg = ReportConfig(
        name="tiny", images=images, out_root=tmp_path_factory.mktemp("reports"),
        classical=[ClassicalSpec(c, GRIDS[c]) for c in CODECS],
        learned=[LearnedSpec("tiny-mgssnet", "mgssnet", untrained=True, config={"N": 16, "M": 24},
                             label="MGSSNet (untrained, N=16)"),
                 LearnedSpec("mbt2018", "mbt2018", {1: str(folder / "missing_q1.pt")})],
        visual_bpp=0.3, progress=False, threads=1,
        classification=ClassificationSetup(train=images, target_bpp=0.8,
                                           config=ClassifierConfig(size=32, epochs=2, batch=3)))
    return run_report(cfg), cfg


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_loaders(folder, tmp_path):
    s = load_folder(folder)
    assert [im.name for im in s] == ["fields/a", "fields/b", "town/c"]
    assert s.classes == ["fields", "town"] and s[0].label == "fields"
    assert s[0].pixels.shape == (3, SIZE, SIZE) and s[0].peak == 255.0
    # a split of a folder is the dataset builder's stratified assignment: disjoint and complete
    parts = [load_folder(folder, split=x) for x in ("train", "val", "test")]
    assert sorted(im.name for p in parts for im in p) == [im.name for im in s]
    # the tile-dataset layout: only the requested split and source, labels from the classes
    import zarr

    root = zarr.open_group(tmp_path / "d.zarr", mode="w", zarr_format=3)
    px = np.stack([im.pixels for im in s])
    for key, arr in {"images": px, "split": np.array([0, 2, 2], np.uint8),
                     "class": np.array([0, 0, 1], np.int16), "source": np.zeros(3, np.int16)}.items():
        root.create_array(key, shape=arr.shape, dtype=arr.dtype)[...] = arr
    root.attrs.update({"name": "d", "classes": ["fields", "town"], "sources": [{"name": "tiny"}]})
    z = load_images(tmp_path / "d.zarr")  # default split: test
    assert [im.name for im in z] == ["tiny/fields/1", "tiny/town/2"]
    assert np.array_equal(z[1].pixels, s[2].pixels) and z.classes == ["fields", "town"]
    with pytest.raises(ValueError, match="no source"):
        load_zarr(tmp_path / "d.zarr", source="other")


def test_report_files(report):
    out, _ = report
    for f in ("README.md", "config.json", "images.csv", "rd.jsonl", "per_image.csv",
              "rd_average.csv", "bd_psnr_paper.csv", "bd_psnr.csv", "bd_ms_ssim_db.csv",
              "quality_at_rates.csv", "rd_main_psnr_paper.png", "rd_main_ms_ssim_db.png",
              "visual_0.3bpp.png", "visual_0.3bpp.csv", "classification.csv", "confusions.png",
              "confusion_original.png", "classifier/classifier.pt", "classifier/classifier_log.csv"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    for png in out.glob("*.png"):
        assert Image.open(png).size[0] > 300


def test_rd_numbers(report):
    out, cfg = report
    rows = _csv(out / "rd_average.csv")
    assert {r["codec"] for r in rows} == {*CODECS, "tiny-mgssnet"}
    j2k = sorted((float(r["setting"]), float(r["bpp"]), float(r["psnr_paper"]), float(r["psnr"]),
                  float(r["ms_ssim_db"])) for r in rows if r["codec"] == "jpeg2000")
    for target, bpp, p10, p, ms in j2k:
        assert 0.8 * target <= bpp <= 1.02 * target  # OpenJPEG's rate control, whole file counted
        assert 15 < p <= p10 + 1e-9 < 70 and 0 < ms < 40  # per-band peak <= 255: eq.10 >= fixed
    assert all(a[2] < b[2] and a[4] < b[4] for a, b in zip(j2k, j2k[1:]))  # quality rises with rate
    per = _csv(out / "per_image.csv")
    assert len(per) == len(cfg.images) * (sum(len(GRIDS[c]) for c in CODECS) + 1)
    learned = [r for r in per if r["codec"] == "tiny-mgssnet"]
    assert len(learned) == 3 and all(float(r["bpp"]) > 0 and math.isfinite(float(r["psnr"]))
                                     for r in learned)
    # the per-image PSNR is that of a real decode: recompute one classical point independently
    im = cfg.images[0]
    data, dec = C.roundtrip("webp", im.hwc, 50)
    rec = next(r for r in per if r["codec"] == "webp" and r["setting"] == "50" and r["image"] == im.name)
    assert int(rec["bytes"]) == len(data)
    assert float(rec["psnr"]) == pytest.approx(M.psnr(im.hwc, dec), abs=1e-3)


def test_bd_tables(report):
    out, _ = report
    bd = _csv(out / "bd_psnr_paper.csv")
    pairs = {(r["test"], r["anchor"]): r for r in bd}
    assert set(pairs) == {("jpeg2000", "webp"), ("webp", "jpeg2000"), ("tiny-mgssnet", "jpeg2000"),
                          ("tiny-mgssnet", "webp")}
    a, b = pairs[("jpeg2000", "webp")], pairs[("webp", "jpeg2000")]
    ra, rb = float(a["bd_rate_pct"]), float(b["bd_rate_pct"])
    assert math.isfinite(ra) and math.isfinite(rb) and -95 < ra < 500
    assert math.copysign(1, ra) == -math.copysign(1, rb)  # swapping anchor and test flips the sign
    assert float(a["bd_quality_db"]) * ra < 0  # fewer bits <=> more dB
    assert math.isnan(float(pairs[("tiny-mgssnet", "webp")]["bd_rate_pct"]))  # one point: no curve
    readme = (out / "README.md").read_text()
    assert "## BD-rate vs anchors" in readme and "| JPEG 2000 (OpenJPEG) | — |" in readme
    assert "mbt2018 q1" in readme and "missing_q1.pt" in readme  # what was missing is listed
    assert "![visual](visual_0.3bpp.png)" in readme and "Downstream classification" in readme


def test_visual_and_classification(report):
    out, _ = report
    vis = {r["codec"]: r for r in _csv(out / "visual_0.3bpp.csv")}
    assert set(vis) == {*CODECS, "tiny-mgssnet"}
    for c in CODECS:  # classical codecs are coded at or just under the target on that tile
        assert float(vis[c]["bpp"]) <= 0.3 + 1e-9
    assert float(vis["jpeg2000"]["bpp"]) > 0.2
    cls = {r["codec"]: r for r in _csv(out / "classification.csv")}
    assert set(cls) == {"original", *CODECS, "tiny-mgssnet"}
    for r in cls.values():
        assert 0.0 <= float(r["oa"]) <= 1.0 and int(r["images"]) == 3
    assert float(cls["jpeg2000"]["bpp"]) <= 0.8 + 1e-9
    cm = np.loadtxt(out / "confusion_original.csv", delimiter=",", skiprows=1)
    assert cm.shape == (2, 2) and cm.sum() == 3 and cm.sum(axis=1).tolist() == [2, 1]
    assert overall_accuracy([0, 1, 1], [0, 1, 0]) == pytest.approx(2 / 3)
    assert confusion_matrix([0, 1, 1], [0, 1, 0], 2).tolist() == [[1, 0], [1, 1]]


def test_resume_reuses_caches(report):
    out, cfg = report
    before = RDCache(out / "rd.jsonl").records
    cls_lines = (out / "classification.jsonl").read_text().count("\n")
    # simulate a kill in the middle of writing a classical record: it is dropped and redone
    lines = (out / "rd.jsonl").read_text().splitlines()
    k = next(i for i, ln in enumerate(lines) if '"webp"' in ln)
    cut = lines.pop(k)
    (out / "rd.jsonl").write_text("\n".join(lines) + "\n" + cut[: len(cut) // 2])
    run_report(replace(cfg, visual_bpp=None))
    after = RDCache(out / "rd.jsonl").records
    assert set(after) == set(before)
    assert len((out / "rd.jsonl").read_text().splitlines()) == len(lines) + 2  # cut + redone
    assert (out / "classification.jsonl").read_text().count("\n") == cls_lines
    rows = average(list(after.values()))
    b, q = curve(rows, "webp", "psnr")
    assert len(b) >= 2 and np.all(np.diff(b) > 0) and np.all(np.diff(q) > 0)


def test_changed_weights_are_classified_again(report, tmp_path):
    """Cached classifications belong to the weights that made them: other weights under the same
    codec name are reconstructed and classified again (as their RD records are measured again)."""
    import shutil

    out, cfg = report
    shutil.copytree(out, tmp_path / out.name)
    spec = cfg.learned[0]
    other = replace(spec, config={"N": 16, "M": 32})  # same name, other weights
    run_report(replace(cfg, out_root=tmp_path, visual_bpp=None,
                       learned=[other if s is spec else s for s in cfg.learned]))
    new = [json.loads(ln) for ln in (tmp_path / out.name / "classification.jsonl").read_text().splitlines()]
    old = [json.loads(ln) for ln in (out / "classification.jsonl").read_text().splitlines()]
    mine = [r for r in new if r["codec"] == spec.name]
    assert len(mine) == 2 * len([r for r in old if r["codec"] == spec.name])
    assert len({r["digest"] for r in mine}) == 2
    # classical codecs' and the original's classifications were reused as they were
    assert len(new) - len(old) == len(mine) // 2


def test_cli_hook(folder, tmp_path):
    from geocompress.cli import build_parser, main

    p = build_parser()
    a = p.parse_args(["evaluate", "x", "--images", str(folder), "--codecs", "jpeg2000",
                      "--checkpoint", "mgssnet:2=/nonexistent.pt"])
    assert a.func.__name__ == "cmd_evaluate"
    rc = main(["--quiet", "evaluate", "cli", "--images", str(folder), "--codecs", "jpeg2000",
               "--grid", "jpeg2000=0.5,1", "--no-visual", "--out", str(tmp_path),
               "--checkpoint", "mbt2018:3=/nonexistent.pt"])
    assert rc == 0
    cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert cfg["classical"] == [{"codec": "jpeg2000", "grid": [0.5, 1.0]}]
    assert "mbt2018 q3: /nonexistent.pt" in (tmp_path / "cli" / "README.md").read_text()


@pytest.mark.parametrize("precision", ["auto", "float32"])
def test_classifier_precision_is_recorded_and_prediction_is_float32(folder, tmp_path, precision):
    """bf16 training (where the CPU has it) still yields a float32 classifier that predicts the
    same classes on every call; the checkpoint says how it was trained."""
    from geocompress.codec.precision import cpu_bf16_supported
    from geocompress.evaluation.classifier import load_classifier, train_classifier

    images = load_folder(folder)
    path = train_classifier(images, None, tmp_path / precision,
                            ClassifierConfig(size=32, epochs=1, batch=3, precision=precision),
                            progress=False)
    clf = load_classifier(path)
    bf16 = precision == "auto" and cpu_bf16_supported()
    assert clf.meta["trained_in"] == ("bf16 autocast, channels-last" if bf16 else "float32")
    assert all(p.dtype == torch.float32 for p in clf.model.parameters())
    pixels = [im.pixels for im in images]
    first = clf.predict(pixels)
    assert first.shape == (3,) and np.array_equal(first, clf.predict(pixels))
    with pytest.raises(ValueError, match="precision"):
        train_classifier(images, None, tmp_path / "bad", ClassifierConfig(size=32, epochs=1,
                                                                            precision="fp8"))
