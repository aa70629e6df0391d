"""Refit each shipped MGSSNet quality's entropy half for halo-coded tiles, and ship it (issue 26).

    .venv/bin/python pipelines/fit_halo_priors.py [--qualities 1 2 3 4] [--tiles 200] [--steps 800]

For each quality: interior latents of ``--tiles`` train-split tiles (and their transposes) through
the frozen analysis transform, a rate-only fit of h_a / h_s / context model / entropy parameters /
factorized prior (:mod:`geocompress.training.halo_prior`), then a prior file
``geocompress/weights/mgssnet-q<n>-halo.pt`` holding only those tensors, registered in
``geocompress/weights/index.json`` as the quality's ``halo_prior``. ``compress --halo K`` codes
with it; stores keep decoding with whichever weights wrote them (the digest picks). Resumable
per quality (a quality whose prior file exists is skipped unless ``--force``; a refitted prior
keeps the one it replaces as ``mgssnet-q<n>-halo-<k>.pt``, listed in the index, so that stores
written with it still decode). The fit's learning curve goes to ``catalogs/models/halo_priors.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from geocompress.codec.weights import (load_checkpoint, load_with_delta, save_prior_delta,
                                       shipped_path, state_digest)
from geocompress.training.data import TileDataset
from geocompress.training.halo_prior import PRIOR_PARTS, HaloPriorConfig, fit_halo_prior, interior_latents

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "geocompress" / "weights"
DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
CURVES = REPO / "catalogs" / "models" / "halo_priors.json"


def fit_one(q: int, tiles: int, cfg: HaloPriorConfig, dataset: Path) -> dict:
    path, _, base_digest = shipped_path("mgssnet", q)
    model = load_checkpoint(path, expected_digest=base_digest).float().eval()
    t0 = time.time()
    train = TileDataset(dataset, "train", crop=None, augment=False, limit=tiles)
    val = TileDataset(dataset, "val", crop=None, augment=False, limit=48)
    lt = interior_latents(model, train.all_pixels())
    lv = interior_latents(model, val.all_pixels(), flips=False)
    t_lat = time.time() - t0
    print(f"q{q}: {len(lt)} latent maps in {t_lat:.0f} s", flush=True)
    hist = fit_halo_prior(model, lt, lv, cfg, log=lambda s: print(f"q{q} {s}", flush=True))
    out = WEIGHTS / f"mgssnet-q{q}-halo.new.pt"  # register() gives it its name
    meta = {"halo_prior": {"base_digest": base_digest, "tiles": tiles, "maps": len(lt),
                           "steps": cfg.steps, "batch": cfg.batch, "sizes": list(cfg.sizes),
                           "lr": cfg.lr, "margin": cfg.margin, "dataset": dataset.name,
                           "seed": cfg.seed}}
    save_prior_delta(model, out, base_digest, PRIOR_PARTS, meta)
    digest = state_digest(load_with_delta(path, base_digest, out).state_dict())
    return {"quality": q, "file": out.name, "digest": digest, "bytes": out.stat().st_size,
            "base_digest": base_digest, "latents_s": round(t_lat, 1),
            "fit_s": round(time.time() - t0 - t_lat, 1), "history": hist, **meta["halo_prior"]}


def register(entry: dict) -> None:
    """The prior in the weights index, under its quality (other entries kept)."""
    index_path = WEIGHTS / "index.json"
    index = json.loads(index_path.read_text())
    q = index["mgssnet"]["qualities"][str(entry["quality"])]
    final = WEIGHTS / f"mgssnet-q{entry['quality']}-halo.pt"
    if q.get("halo_prior"):  # stores written with the old prior keep decoding with it
        old = q.setdefault("halo_prior_superseded", [])
        kept = final.with_name(f"{final.stem}-{len(old) + 1}.pt")
        (WEIGHTS / q["halo_prior"]["file"]).replace(kept)
        old.append({"file": kept.name, "digest": q["halo_prior"]["digest"]})
    (WEIGHTS / entry["file"]).replace(final)
    entry["file"] = final.name
    q["halo_prior"] = {"file": entry["file"], "digest": entry["digest"],
                       "val_bpp_before": entry["history"][0], "val_bpp_after": entry["history"][-1]}
    tmp = index_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    tmp.replace(index_path)
    curves = json.loads(CURVES.read_text()) if CURVES.exists() else {}
    curves[str(entry["quality"])] = entry
    CURVES.write_text(json.dumps(curves, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--tiles", type=int, default=200, help="train tiles (each also transposed)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--dataset", type=Path, default=DATASET)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true", help="refit qualities that already have a prior")
    a = p.parse_args(argv)
    if not a.dataset.exists():
        print(f"{a.dataset} not found: build it with `.venv/bin/python pipelines/build_dataset.py`",
              file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    cfg = HaloPriorConfig(steps=a.steps, val_every=max(1, a.steps // 6))
    for q in a.qualities:
        index = json.loads((WEIGHTS / "index.json").read_text())
        if index["mgssnet"]["qualities"].get(str(q), {}).get("halo_prior") and not a.force:
            print(f"q{q}: prior exists (--force to refit)")
            continue
        register(fit_one(q, a.tiles, cfg, a.dataset))
        print(f"q{q}: registered", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
