"""Export the latest MGSSNet training states as the package's shipped weights, and measure them.

    .venv/bin/python pipelines/ship_weights.py [--runs runs/mgssnet] [--max-tiles 0] [--workers 2]

Safe to run at any time, also while training runs: it reads each ``runs/mgssnet/q<n>/
train_state.pt`` (written atomically), exports an fp16 inference checkpoint (CDF tables from
``update(force=True)``) to ``geocompress/weights/mgssnet-q<n>.pt``, writes
``geocompress/weights/index.json``, then codes the test split of the dataset through the real
codec (:func:`geocompress.load_codec`, float64 exact path, every byte counted) and writes
``catalogs/models/mgssnet.json`` / ``.md`` (architecture, N, M, lambda, steps, data, wall time,
hardware, digest, measured bpp / PSNR / MS-SSIM dB) and per-tile results for the benchmark
(``catalogs/models/mgssnet-test-tiles.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geocompress.codec import load_checkpoint, state_digest
from geocompress.codec.tile_codec import TileCodec
from geocompress.metrics import ms_ssim_db, psnr
from geocompress.training import TileDataset
from geocompress.training.lr_history import describe
from geocompress.training.checkpoints import STATE, export_state

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "geocompress" / "weights"
CATALOG = REPO / "catalogs" / "models"
DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
MAX_BYTES = 15 * 1024 * 1024


def export_run(run: Path, quality: int) -> dict[str, Any]:
    """fp16 checkpoint of the run's latest state; returns its catalog entry (no measurements)."""
    path = WEIGHTS / f"mgssnet-q{quality}.pt"
    digest, meta, model = export_state(run / STATE, path, quality)
    return _entry(path, digest, meta, model)


def adopt_checkpoint(src: Path, quality: int) -> dict[str, Any]:
    """A checkpoint exported elsewhere (e.g. on a GPU box by train_qualities --export-dir)."""
    path = WEIGHTS / f"mgssnet-q{quality}.pt"
    if src.resolve() != path.resolve():
        shutil.copyfile(src, path)
    model = load_checkpoint(path)  # refuses a damaged file before it is catalogued
    return _entry(path, state_digest(model.state_dict()), dict(model.meta), model)


def _entry(path: Path, digest: str, meta: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is {size / 2**20:.1f} MiB, over the 15 MB limit")
    return {"file": path.name, "digest": digest, "bytes": size, "arch": model.arch,
            "config": dict(model.config), "params": sum(p.numel() for p in model.parameters()),
            **meta}


def _steps(e: dict[str, Any]) -> tuple[str, float]:
    """Steps as 'inherited (from) + own' and total training wall seconds, for the catalog."""
    w = e.get("warm_start")
    if not w:
        return str(e["steps"]), e["wall_s"]
    return f"{w['steps']} ({w['path']}) + {e['steps']}", e.get("total_wall_s", e["wall_s"])


def _stretches(entries: list[dict[str, Any]]) -> str:
    """Each quality's stretch probability, compactly (one value when they agree)."""
    by_q = {e["quality"]: e.get("stretch", 0.0) for e in entries}
    if len(set(by_q.values())) == 1:
        p = next(iter(by_q.values()))
        return f"probability {p:g}" if p else "none"
    return ", ".join(f"q{q} {p:g}" for q, p in sorted(by_q.items()))


def measure(path: Path, digest: str, tiles: list[np.ndarray], quality: int,
            batch: int = 8) -> dict[str, Any]:
    """Code every tile to bytes and back through the real codec; per-tile and mean figures."""
    codec = TileCodec(load_checkpoint(path, expected_digest=digest), quality=quality, batch_size=batch)
    rows = []
    t0 = time.time()
    for i in range(0, len(tiles), batch):
        chunk = tiles[i:i + batch]
        strings = codec.encode(np.stack(chunk))
        decoded = codec.decode(strings)
        for t, s, d in zip(chunk, strings, decoded):
            px = t.shape[1] * t.shape[2]
            rows.append({"bytes": len(s), "bpp": 8 * len(s) / px, "psnr": psnr(t, d),
                         "ms_ssim_db": ms_ssim_db(t, d)})
    total_px = sum(t.shape[1] * t.shape[2] for t in tiles)
    return {"tiles": len(rows), "bytes": sum(r["bytes"] for r in rows),
            "bpp": 8 * sum(r["bytes"] for r in rows) / total_px,
            "psnr": float(np.mean([r["psnr"] for r in rows])),
            "ms_ssim_db": float(np.mean([r["ms_ssim_db"] for r in rows])),
            "seconds": round(time.time() - t0, 1), "per_tile": rows}


def shipped_entries(keep_out: set[int], idx: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Qualities shipped before and not re-exported now: shipping q2-q4 must not unlist q1.

    Returns (kept, stale): entries whose catalogued figures still hold (same checkpoint digest, same
    test tiles), and entries whose checkpoint is unchanged but must be measured again.
    """
    catalog, tiles_json = CATALOG / "mgssnet.json", CATALOG / "mgssnet-test-tiles.json"
    if not catalog.exists():
        return [], []
    old = json.loads(catalog.read_text())["qualities"]
    per_tile = json.loads(tiles_json.read_text()) if tiles_json.exists() else {}
    kept, stale = [], []
    for e in old:
        q = e["quality"]
        if q in keep_out or not (WEIGHTS / e["file"]).exists():
            continue
        load_checkpoint(WEIGHTS / e["file"], expected_digest=e["digest"])  # raises if the file changed
        tiles_q = per_tile.get("qualities", {}).get(str(q))
        if per_tile.get("tile_index") == idx and tiles_q is not None:
            kept.append(e | {"test": e["test"] | {"per_tile": tiles_q}})
        else:
            stale.append({k: v for k, v in e.items() if k != "test"})
    return kept, stale


def test_tiles(dataset: Path, max_tiles: int | None) -> tuple[list[np.ndarray], list[int]]:
    ds = TileDataset(dataset, "test", crop=None, augment=False, limit=max_tiles)
    return [ds.pixels(i) for i in range(len(ds))], ds.indices.tolist()


def write_catalog(entries: list[dict[str, Any]], n_tiles: int, dataset: Path) -> None:
    CATALOG.mkdir(parents=True, exist_ok=True)
    public = [{k: v for k, v in e.items() if k != "test"} | {"test": {k: v for k, v in e["test"].items()
                                                                       if k != "per_tile"}}
              for e in entries]
    (CATALOG / "mgssnet.json").write_text(json.dumps(
        {"arch": "mgssnet", "dataset": dataset.name, "test_tiles": n_tiles,
         "measured_with": "geocompress TileCodec, float64 exact entropy path; bpp counts every byte "
                          "of each tile string (header and CRC included); PSNR peak 255, mean over "
                          "tiles; MS-SSIM dB = -10 log10(1 - MS-SSIM), mean over tiles",
         "qualities": public}, indent=1) + "\n")
    lines = ["# Shipped MGSSNet weights", "",
             f"Measured on {n_tiles} tiles (256 x 256 RGB) of the test split of `{dataset.name}` "
             "(catalogs/datasets/) through the real codec: bytes include each tile string's "
             "header and checksum. Produced by `pipelines/train_qualities.py` and "
             "`pipelines/ship_weights.py`.", "",
             "| q | file | N | M | lambda (CompressAI) | lambda (paper scale) | steps | wall time | "
             "bpp | PSNR dB | MS-SSIM dB | size | digest |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        t = e["test"]
        steps, wall = _steps(e)
        lines.append(f"| {e['quality']} | {e['file']} | {e['config']['N']} | {e['config']['M']} | "
                     f"{e['lambda']} | {e['lambda_paper_scale']:.3g} | {steps} | "
                     f"{wall / 60:.0f} min | {t['bpp']:.3f} | {t['psnr']:.2f} | "
                     f"{t['ms_ssim_db']:.2f} | {e['bytes'] / 2**20:.1f} MiB | `{e['digest'][:16]}` |")
    e0 = entries[0]
    lines += ["", f"Architecture: MGSSNet ({e0['config']}, {e0['params'] / 1e6:.2f} M parameters, "
              f"fp16 weights). Training: {e0['dataset']} train split, batch {e0['batch']} of "
              f"{e0['crop']} x {e0['crop']} random crops with flips, Adam (main; recipe lr {e0['lr']}, "
              f"as run: below) / lr {e0['aux_lr']} (aux), gradient clipping 1.0, lr halved on validation plateau, "
              f"quantization of the last phase: {', '.join(sorted({e.get('quantization', 'noise') for e in entries}))} "
              "(geocompress/training/quantization.py), "
              f"per-band stretch augmentation of the last phase: {_stretches(entries)} "
              "(geocompress/training/data.py `restretch`), "
              "then a polish phase at a lower lr; "
              f"hardware: {e0['hardware']}. Phases and budgets: `pipelines/train_qualities.py` "
              "(q3 from scratch, the others warm-started from its training state, then all side by "
              "side; each session's lrs and thread counts: `mgssnet-training.md`); `steps` counts "
              "inherited + own steps, `wall time` both.",
              "", "Main lr of each quality's own steps, as its training log recorded them (steps "
              "counted from the warm start; inherited steps where the lineage recorded them, else "
              "the previous version of this file and `mgssnet-training.md`):", ""]
    for e in entries:
        sched = describe(e["lr_schedule"]) if e.get("lr_schedule") else \
            "not recorded (exported before the catalog kept it; see `mgssnet-training.md`)"
        w = e.get("warm_start") or {}
        if w.get("lr_schedule"):
            sched += f"; inherited from {w['path']} ({w['steps']} steps, numbered over the chain): " \
                     f"{describe(w['lr_schedule'])}"
        lines.append(f"* q{e['quality']}: {sched}")
    lines += ["", "Comparison with JPEG 2000: `benchmarks/rd_vs_jpeg2000.py` -> `rd_vs_jpeg2000.md`. "
              "Which runs produced these weights, what was tried and where they stand: "
              "`mgssnet-training.md` (kept by hand; this file is generated)."]
    (CATALOG / "mgssnet.md").write_text("\n".join(lines) + "\n")


def halo_entries(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A quality's halo priors (``pipelines/fit_halo_priors.py``) survive a release whose base
    weights are unchanged; they refit those base weights only, so new ones drop them (refit)."""
    keys = ("halo_prior", "halo_prior_superseded")
    if old.get("digest") == new["digest"]:
        return {k: old[k] for k in keys if k in old}
    if any(k in old for k in keys):
        print(f"q{new['quality']}: new weights, its halo prior no longer applies: refit it with "
              f"pipelines/fit_halo_priors.py --qualities {new['quality']} --force", flush=True)
    return {}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=REPO / "runs" / "mgssnet")
    p.add_argument("--checkpoints", type=Path, default=None,
                   help="adopt mgssnet-q<n>.pt checkpoints exported elsewhere (a GPU box) instead "
                        "of exporting runs/")
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--max-tiles", type=int, default=0,
                   help="evenly spaced subset of the test split; 0 (default) = all of it (the exact "
                        "float64 codec takes ~2.5 s per tile and quality on one core)")
    p.add_argument("--batch", type=int, default=16, help="tiles per codec batch")
    p.add_argument("--default-quality", type=int, default=None)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="qualities measured side by side, one process and one torch thread each")
    a = p.parse_args(argv)
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    if a.checkpoints is not None:
        found = sorted((int(f.stem.rsplit("-q", 1)[1]), f) for f in a.checkpoints.glob("mgssnet-q*.pt"))
        if not found:
            raise SystemExit(f"no mgssnet-q<n>.pt under {a.checkpoints}")
        entries = [adopt_checkpoint(f, q) for q, f in found]
    else:
        runs = sorted((int(d.name[1:]), d) for d in a.runs.glob("q*") if (d / STATE).exists())
        if not runs:
            raise SystemExit(f"no training states under {a.runs}")
        entries = [export_run(run, q) for q, run in runs]
    tiles, idx = test_tiles(a.dataset, a.max_tiles or None)
    kept, stale = shipped_entries({e["quality"] for e in entries}, idx)
    entries += stale
    with ProcessPoolExecutor(max_workers=min(a.workers, len(entries)),
                             initializer=torch.set_num_threads, initargs=(1,)) as pool:
        jobs = [pool.submit(measure, WEIGHTS / e["file"], e["digest"], tiles, e["quality"], a.batch)
                for e in entries]
        for e, job in zip(entries, jobs):
            e["test"] = t = job.result()
            print(f"q{e['quality']}: lambda {e['lambda']} steps {e['steps']} -> {t['bpp']:.3f} bpp, "
                  f"{t['psnr']:.2f} dB, MS-SSIM {t['ms_ssim_db']:.2f} dB ({t['seconds']} s)",
                  flush=True)
    for e in kept:
        print(f"q{e['quality']}: unchanged since it was measured, {e['test']['bpp']:.3f} bpp, "
              f"{e['test']['psnr']:.2f} dB (kept)", flush=True)
    entries = sorted(entries + kept, key=lambda e: e["quality"])
    qs = [e["quality"] for e in entries]
    default = a.default_quality or qs[len(qs) // 2]
    index = json.loads((WEIGHTS / "index.json").read_text()) if (WEIGHTS / "index.json").exists() else {}
    before = index.get("mgssnet", {}).get("qualities", {})
    index |= {"mgssnet": {"default": default, "qualities": {
        str(e["quality"]): {"file": e["file"], "digest": e["digest"], "lambda": e["lambda"],
                            "bpp_test": round(e["test"]["bpp"], 4),
                            "psnr_test": round(e["test"]["psnr"], 3),
                            **halo_entries(before.get(str(e["quality"]), {}), e)} for e in entries}}}
    (WEIGHTS / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    write_catalog(entries, len(tiles), a.dataset)
    (CATALOG / "mgssnet-test-tiles.json").write_text(json.dumps(
        {"dataset": a.dataset.name, "tile_index": idx,
         "qualities": {str(e["quality"]): e["test"]["per_tile"] for e in entries}}) + "\n")
    if any(not math.isfinite(e["test"]["psnr"]) for e in entries):
        raise SystemExit("a quality decoded to non-finite PSNR")


if __name__ == "__main__":
    main()
