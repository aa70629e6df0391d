"""Export training runs in progress as fp16 weights under ``catalogs/models/wip/``, so that a
session on another machine can continue them (``geocompress train ... --warm-start FILE
--warmup-steps 200``). Weights only, no optimizer state; safe while the run trains (its state is
written atomically). What each file is and its curve: ``catalogs/models/wip/README.md``.

    .venv/bin/python pipelines/export_wip.py runs/mgssnet-hi/q6 runs/mgssnet-hi/q5 [--measure]
    .venv/bin/python pipelines/export_wip.py runs/mgssnet-vr     # the variable-rate run

A variable-rate run (``mgssnet-vr``) exports to ``mgssnet-vr.pt``; its RD curve at every level is
measured by ``benchmarks/vr_rd.py``. A halo prior beside a file (``<stem>-halo.pt``) refits the
weights replaced: it is removed (``--halo auto`` would not use it), and
``pipelines/fit_halo_priors.py --checkpoint FILE`` fits the new weights' one.

``--measure`` also codes the test split through the real codec with each exported file (every
byte counted) and reads JPEG 2000's PSNR on the same tiles at the same mean bpp (the RD point a
catalog entry records); results go to ``catalogs/models/wip/wip.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from geocompress.codec.weights import drop_stale_halo_prior
from geocompress.training.checkpoints import STATE, export_state

REPO = Path(__file__).resolve().parents[1]
WIP = REPO / "catalogs" / "models" / "wip"
DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
sys.path[:0] = [str(REPO / "pipelines"), str(REPO / "benchmarks")]  # ship_weights, rd_vs_jpeg2000


def measure(path: Path, digest: str, quality: int, dataset: Path) -> dict:
    """The checkpoint's test-split point through the real codec, beside JPEG 2000 at its bpp."""
    from rd_vs_jpeg2000 import j2k_curve
    from ship_weights import measure as code_tiles, test_tiles

    from geocompress.evaluation.bd import interp_psnr_at_rate

    tiles, _ = test_tiles(dataset, None)
    got = code_tiles(path, digest, tiles, quality)
    curve = j2k_curve(tiles)
    j2k = float(interp_psnr_at_rate(curve[:, 0], curve[:, 1], got["bpp"]))
    return {"tiles": got["tiles"], "bpp": round(got["bpp"], 4), "psnr": round(got["psnr"], 3),
            "ms_ssim_db": round(got["ms_ssim_db"], 3), "jpeg2000_psnr_at_bpp": round(j2k, 3),
            "vs_jpeg2000_db": round(got["psnr"] - j2k, 3)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run folders holding train_state.pt")
    p.add_argument("--out", type=Path, default=WIP)
    p.add_argument("--measure", action="store_true", help="test-split RD point and JPEG 2000's")
    p.add_argument("--dataset", type=Path, default=DATASET)
    a = p.parse_args(argv)
    record = a.out / "wip.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    for run in a.runs:
        state = torch.load(run / STATE, map_location="cpu", weights_only=False)
        variable_rate = state["arch"] == "mgssnet-vr"
        q = int(state.get("quality") or 0)
        if not q and not variable_rate:
            raise SystemExit(f"{run}: the run records no quality index (train with --quality N)")
        a.out.mkdir(parents=True, exist_ok=True)
        out = a.out / (f"{state['arch']}.pt" if variable_rate else f"{state['arch']}-q{q}.pt")
        digest, meta, _ = export_state(run / STATE, out, quality=q)
        print(f"{run} -> {out.relative_to(REPO) if out.is_relative_to(REPO) else out}: own steps "
              f"{meta['steps']}, in all {meta.get('total_steps')}, lambda {meta['lambda']}, "
              f"{out.stat().st_size / 1e6:.1f} MB, digest {digest[:12]}", flush=True)
        entry = {"file": out.name, "digest": digest, "lambda": meta["lambda"], "config": state["config"],
                 "own_steps": meta["steps"], "total_steps": meta.get("total_steps"),
                 "wall_s": meta.get("wall_s"), "hardware": meta.get("hardware"), "ema": meta.get("ema")}
        prior = drop_stale_halo_prior(out)
        if prior is not None:
            print(f"removed {prior.name} (it refits the weights replaced): refit it with "
                  f"`.venv/bin/python pipelines/fit_halo_priors.py --checkpoint {out}`", flush=True)
        if variable_rate:  # every level at once: benchmarks/vr_rd.py measures it
            entry["level_lambdas"] = meta.get("level_lambdas")
            results["vr"] = entry
            record.write_text(json.dumps(results, indent=1) + "\n")
            continue
        if a.measure:
            entry["test"] = t = measure(out, digest, q, a.dataset)
            print(f"  test split: {t['bpp']:.3f} bpp, {t['psnr']:.2f} dB (JPEG 2000 at that bpp "
                  f"{t['jpeg2000_psnr_at_bpp']:.2f} dB, {t['vs_jpeg2000_db']:+.2f})", flush=True)
        results[f"q{q}"] = entry
        record.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
