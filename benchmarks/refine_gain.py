"""Encoder-side latent refinement vs plain encoding, shipped MGSSNet, test split, side by side.

    .venv/bin/python benchmarks/refine_gain.py [--tiles 12] [--steps 80] [--workers 2]

On an evenly spaced subset of the test tiles, every shipped quality encodes each tile twice --
plainly and with ``refine_steps`` (:mod:`geocompress.codec.refine`) -- and the *plain* codec decodes
both sets of strings (the format and decoder are the same). Per quality it prints bpp, PSNR and
MS-SSIM dB of both, the refined minus plain differences, JPEG 2000's PSNR interpolated at each
mean bpp (OpenJPEG, a curve over the same tiles) and matched per tile, and the encode time per tile
of both with their ratio. Writes ``catalogs/models/refine_gain.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rd_vs_jpeg2000 import CATALOG, DATASET, j2k_curve, j2k_point  # noqa: E402

from geocompress.evaluation.bd import interp_psnr_at_rate  # noqa: E402
from geocompress.metrics import ms_ssim_db, psnr  # noqa: E402
from geocompress.training import TileDataset  # noqa: E402


def subset(n: int) -> tuple[list[int], list[np.ndarray]]:
    ds = TileDataset(DATASET, "test", crop=None, augment=False)
    pos = np.linspace(0, len(ds) - 1, n).round().astype(int) if n else np.arange(len(ds))
    return [int(ds.indices[p]) for p in pos], [ds.pixels(int(p)) for p in pos]


def measure(quality: int, tiles: list[np.ndarray], steps: int, lr: float) -> dict:
    import torch

    torch.set_num_threads(1)
    from geocompress import load_codec

    plain = load_codec("mgssnet", quality=quality)
    refining = load_codec("mgssnet", quality=quality, refine_steps=steps)
    refining.refine_lr = lr
    out = {"quality": quality, "lambda": plain.lmbda, "digest": plain.digest}
    for name, codec in (("plain", plain), ("refined", refining)):
        t0 = time.perf_counter()
        strings = [codec.encode([t])[0] for t in tiles]
        secs = (time.perf_counter() - t0) / len(tiles)
        decoded = plain.decode(strings)  # refined strings decode with the plain codec
        out[name] = {"encode_s_per_tile": secs,
                     "bpp": [8 * len(s) / (t.shape[1] * t.shape[2]) for s, t in zip(strings, tiles)],
                     "psnr": [psnr(t, d) for t, d in zip(tiles, decoded)],
                     "ms_ssim_db": [ms_ssim_db(t, d) for t, d in zip(tiles, decoded)]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", type=int, default=12, help="evenly spaced test tiles (0 = all)")
    p.add_argument("--steps", type=int, default=80, help="refinement steps per tile")
    p.add_argument("--lr", type=float, default=5e-3, help="refinement step size (Adam)")
    p.add_argument("--qualities", type=int, nargs="+", default=None)
    p.add_argument("--workers", type=int, default=2, help="qualities measured side by side")
    a = p.parse_args()
    index, tiles = subset(a.tiles)
    models = json.loads((CATALOG / "mgssnet.json").read_text())
    qualities = a.qualities or [q["quality"] for q in models["qualities"]]
    with ProcessPoolExecutor(a.workers) as pool:
        futures = [pool.submit(measure, q, tiles, a.steps, a.lr) for q in qualities]
        c_bpp, c_psnr = j2k_curve(tiles).T[:2]
        results = [f.result() for f in futures]
    rows = []
    for res in results:
        row = {"quality": res["quality"], "lambda": res["lambda"], "digest": res["digest"]}
        for name in ("plain", "refined"):
            r = res[name]
            bpp = float(np.mean(r["bpp"]))
            matched = np.array([j2k_point(t, b, matched=True)[1] for t, b in zip(tiles, r["bpp"])])
            row[name] = {"bpp": bpp, "psnr": float(np.mean(r["psnr"])),
                         "ms_ssim_db": float(np.mean(r["ms_ssim_db"])),
                         "encode_s_per_tile": r["encode_s_per_tile"],
                         "vs_j2k_interp_db": float(np.mean(r["psnr"]) - interp_psnr_at_rate(c_bpp, c_psnr, bpp)),
                         "vs_j2k_matched_db": float(np.mean(np.array(r["psnr"]) - matched)),
                         "per_tile": {k: r[k] for k in ("bpp", "psnr", "ms_ssim_db")}}
        rows.append(row)
    result = {"dataset": DATASET.name, "tile_index": index, "steps": a.steps, "lr": a.lr, "rows": rows,
              "jpeg2000_curve": {"bpp": c_bpp.tolist(), "psnr": c_psnr.tolist()}}
    (CATALOG / "refine_gain.json").write_text(json.dumps(result, indent=1) + "\n")
    report(result)


def report(res: dict) -> None:
    lines = ["# Encoder-side latent refinement vs plain encoding (shipped MGSSNet)", "",
             f"{len(res['tile_index'])} evenly spaced test tiles of `{res['dataset']}`, "
             f"{res['steps']} Adam steps at lr {res['lr']:g} per tile (`refine_steps`, "
             "`geocompress/codec/refine.py`); both sets of strings decoded by the plain codec "
             "(same format, same decoder). JPEG 2000 (OpenJPEG) on the same tiles. "
             "Encode times: one torch thread per quality, two qualities side by side on the "
             "project's 2-core CPU. Produced by `benchmarks/refine_gain.py`.", "",
             "| q | plain bpp / PSNR / MS-SSIM dB | refined bpp / PSNR / MS-SSIM dB | PSNR gain | bits | "
             "vs JPEG 2000 interp., plain / refined | matched per tile, plain / refined | "
             "encode s/tile, plain / refined |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        pl, rf = r["plain"], r["refined"]
        lines.append(
            f"| {r['quality']} | {pl['bpp']:.3f} / {pl['psnr']:.2f} / {pl['ms_ssim_db']:.2f} | "
            f"{rf['bpp']:.3f} / {rf['psnr']:.2f} / {rf['ms_ssim_db']:.2f} | "
            f"{rf['psnr'] - pl['psnr']:+.2f} dB | {100 * (rf['bpp'] / pl['bpp'] - 1):+.1f} % | "
            f"{pl['vs_j2k_interp_db']:+.2f} / {rf['vs_j2k_interp_db']:+.2f} dB | "
            f"{pl['vs_j2k_matched_db']:+.2f} / {rf['vs_j2k_matched_db']:+.2f} dB | "
            f"{pl['encode_s_per_tile']:.1f} / {rf['encode_s_per_tile']:.1f} "
            f"(x{rf['encode_s_per_tile'] / pl['encode_s_per_tile']:.1f}) |")
    (CATALOG / "refine_gain.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))


if __name__ == "__main__":
    main()
