"""Refit each shipped MGSSNet quality's entropy half for halo-coded tiles, and ship it (issue 26);
or a run in progress's, beside its weights (issue 35).

    .venv/bin/python pipelines/fit_halo_priors.py [--qualities 1 2 3 4] [--tiles 200] [--steps 800]
    .venv/bin/python pipelines/fit_halo_priors.py --checkpoint catalogs/models/wip/mgssnet-vr.pt

For each quality: interior latents of ``--tiles`` train-split tiles (and their transposes) through
the frozen analysis transform, a rate-only fit of h_a / h_s / context model / entropy parameters /
factorized prior (:mod:`geocompress.training.halo_prior`), then a prior file
``geocompress/weights/mgssnet-q<n>-halo.pt`` holding only those tensors, registered in
``geocompress/weights/index.json`` as the quality's ``halo_prior``. ``compress --halo K`` codes
with it; stores keep decoding with whichever weights wrote them (the digest picks). Resumable
per quality (a quality whose prior file exists is skipped unless ``--force``; a refitted prior
keeps the one it replaces as ``mgssnet-q<n>-halo-<k>.pt``, listed in the index, so that stores
written with it still decode). The fit's learning curve goes to ``catalogs/models/halo_priors.json``.

With ``--checkpoint FILE``: the same fit for weights that are not shipped, on the train tiles of
both datasets the variable-rate run trains on, at levels over its whole scale (a level per
window; :func:`~geocompress.training.halo_prior.fit_halo_prior`), written as ``<stem>-halo.pt``
beside ``FILE``: ``compress --checkpoint FILE --halo auto`` codes with it (halo 2) while it refits
those very weights, and stores written with it decode by their digest. ``export_wip.py`` removes
it when it replaces the weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from geocompress.codec.weights import (keep_replaced_halo_prior, load_checkpoint, load_with_delta,
                                       save_prior_delta, shipped_path, state_digest)
from geocompress.training.data import TileDataset
from geocompress.training.halo_prior import PRIOR_PARTS, HaloPriorConfig, fit_halo_prior, interior_latents

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "geocompress" / "weights"
DATASET = REPO / "data" / "geocompress-rs-v1.zarr"
EXTRA = REPO / "data" / "geocompress-rs-extra-v1.zarr"
PARTS = {"all": PRIOR_PARTS, "small": ("h_a.", "entropy_parameters.", "entropy_bottleneck.")}
CURVES = REPO / "catalogs" / "models" / "halo_priors.json"


def fit(path: Path, base_digest: str, out: Path, name: str, tiles: int, cfg: HaloPriorConfig,
        datasets: list[Path]) -> dict:
    """Fit the prior of the weights at ``path`` on ``tiles`` train tiles of each dataset and write
    it to ``out``; returns the catalog entry (history, digests, sizes, timings)."""
    model = load_checkpoint(path, expected_digest=base_digest).float().eval()
    t0 = time.time()
    train = np.concatenate([TileDataset(d, "train", crop=None, augment=False, limit=tiles).all_pixels()
                            for d in datasets])
    val = np.concatenate([TileDataset(d, "val", crop=None, augment=False, limit=48).all_pixels()
                          for d in datasets])
    lt = interior_latents(model, train)
    lv = interior_latents(model, val, flips=False)
    t_lat = time.time() - t0
    print(f"{name}: {len(lt)} latent maps in {t_lat:.0f} s", flush=True)
    hist = fit_halo_prior(model, lt, lv, cfg, log=lambda s: print(f"{name} {s}", flush=True))
    meta = {"halo_prior": {"base_digest": base_digest, "tiles": tiles, "maps": len(lt),
                           "steps": cfg.steps, "batch": cfg.batch, "sizes": list(cfg.sizes),
                           "lr": cfg.lr, "margin": cfg.margin, "parts": list(cfg.parts),
                           "dataset": "+".join(d.name for d in datasets), "seed": cfg.seed}}
    save_prior_delta(model, out, base_digest, cfg.parts, meta)
    digest = state_digest(load_with_delta(path, base_digest, out).state_dict())
    return {"file": out.name, "digest": digest, "bytes": out.stat().st_size,
            "base_digest": base_digest, "latents_s": round(t_lat, 1),
            "fit_s": round(time.time() - t0 - t_lat, 1), "history": hist, **meta["halo_prior"]}


def fit_one(q: int, tiles: int, cfg: HaloPriorConfig, dataset: Path) -> dict:
    """A shipped quality's prior (``register`` gives the file its name)."""
    path, _, base_digest = shipped_path("mgssnet", q)
    out = WEIGHTS / f"mgssnet-q{q}-halo.new.pt"
    return {"quality": q, **fit(path, base_digest, out, f"q{q}", tiles, cfg, [dataset])}


def fit_checkpoint(path: Path, tiles: int, cfg: HaloPriorConfig, datasets: list[Path]) -> dict:
    """The prior of weights that are not shipped (a run in progress), written beside them as
    ``<stem>-halo.pt`` (:func:`geocompress.codec.weights.checkpoint_halo_prior`: ``--halo
    auto`` codes with it while it refits those very weights); its curve goes to ``CURVES`` under
    the file's name."""
    base_digest = state_digest(load_checkpoint(path).state_dict())
    final = path.with_name(f"{path.stem}-halo.pt")
    tmp = path.with_name(f"{path.stem}-halo.new.pt")
    entry = fit(path, base_digest, tmp, path.stem, tiles, cfg, datasets)
    kept = keep_replaced_halo_prior(path)  # a refit of the same weights: their stores still decode
    if kept is not None:
        print(f"the prior it replaces is kept as {kept.name} (stores written with it decode)")
    tmp.replace(final)
    entry["file"] = final.name
    curves = json.loads(CURVES.read_text()) if CURVES.exists() else {}
    curves[path.stem] = entry
    CURVES.write_text(json.dumps(curves, indent=1) + "\n")
    return entry


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
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="fit the prior of these weights instead (a variable-rate run's: every "
                        "level), written beside them as <stem>-halo.pt")
    p.add_argument("--tiles", type=int, default=200, help="train tiles per dataset (each also transposed)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--parts", choices=sorted(PARTS), default=None,
                   help="the tensors refitted: all of the entropy half (default for the shipped "
                        "qualities), or 'small' (default with --checkpoint: h_a, entropy "
                        "parameters, factorized prior, a few MB where h_s and the context model "
                        "are most of a wide model's size, refitted with every wip commit; "
                        "catalogs/halo.md, section 5)")
    p.add_argument("--dataset", type=Path, nargs="+", default=None,
                   help="tile datasets (default: geocompress-rs-v1; with --checkpoint also the "
                        "extra scenes' set, as the variable-rate run trains)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--force", action="store_true", help="refit qualities that already have a prior")
    a = p.parse_args(argv)
    datasets = a.dataset or ([DATASET, EXTRA] if a.checkpoint else [DATASET])
    missing = [d for d in datasets if not d.exists()]
    if missing:
        print(f"{missing[0]} not found: build it with `.venv/bin/python pipelines/build_dataset.py"
              f"{' --set extra' if missing[0] == EXTRA else ''}`", file=sys.stderr)
        return 2
    if a.checkpoint is not None and not a.checkpoint.is_file():
        print(f"{a.checkpoint} not found", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    parts = PARTS[a.parts or ("small" if a.checkpoint is not None else "all")]
    cfg = HaloPriorConfig(steps=a.steps, val_every=max(1, a.steps // 6), parts=parts)
    if a.checkpoint is not None:
        entry = fit_checkpoint(a.checkpoint, a.tiles, cfg, datasets)
        print(f"{a.checkpoint.stem}: prior {entry['file']} ({entry['bytes'] / 1e6:.1f} MB) "
              f"refits {entry['base_digest'][:12]}", flush=True)
        return 0
    for q in a.qualities:
        index = json.loads((WEIGHTS / "index.json").read_text())
        if index["mgssnet"]["qualities"].get(str(q), {}).get("halo_prior") and not a.force:
            print(f"q{q}: prior exists (--force to refit)")
            continue
        register(fit_one(q, a.tiles, cfg, datasets[0]))
        print(f"q{q}: registered", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
