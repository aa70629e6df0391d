"""What binds the variable-rate MGSSNet at its top levels: the transforms, level by level.

    .venv/bin/python benchmarks/vr_ceiling.py --checkpoint catalogs/models/wip/mgssnet-vr.pt \\
        [--levels 7 11] [--search-tiles 8] [--crop 128] [--steps 150]

Per level of the weights:

* the ceiling: PSNR of ``g_s(g_a(x))`` with unquantized latents on every tile of the test split of
  ``geocompress-rs-v1`` (rounded to 8 bits as the decoder's output is): the most any entropy model
  could recover from these transforms at that level;
* on ``--search-tiles`` evenly spaced test tiles (their centre ``--crop`` pixels, to keep the
  search minutes on two cores): the codec's bpp and PSNR through the real codec, the same
  ceiling, and the decoder search: the synthesis layers' input searched by ``--steps`` Adam steps
  (lr 5e-3) on MSE alone, no rate, no quantization, from ``g_a(x)``: what ``g_s`` can give with any
  latent at all; and JPEG 2000 (OpenJPEG) on the same crops at the codec's bpp. A search below
  JPEG 2000 means the synthesis itself binds: only training it (not more latent channels, not a
  better entropy model) lifts the curve.

Goal: at the top level measured, the decoder search reaches JPEG 2000's PSNR at the codec's bpp on
the same crops (the synthesis could match JPEG 2000 given the right latent); exit code 1 when it
does not, with the margin. Writes ``catalogs/models/mgssnet-vr-ceiling.{md,json}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_label, total_steps  # noqa: E402
from transform_ceiling import ceiling, decoder_search  # noqa: E402
from rd_vs_jpeg2000 import bpp, j2k_curve  # noqa: E402
from vr_rd import CATALOG, DATASETS, test_tiles  # noqa: E402

from geocompress.evaluation.bd import interp_psnr_at_rate, rd_front  # noqa: E402
from geocompress.metrics import psnr  # noqa: E402


def codec_point(checkpoint: Path, level: float, tiles: list[np.ndarray]) -> tuple[float, float]:
    """Mean bpp (every byte of every string) and PSNR of ``tiles`` through the real codec."""
    from geocompress import load_codec

    codec = load_codec(checkpoint=str(checkpoint), quality=level, precision="float32", batch_size=8)
    strings = codec.encode(tiles)
    recon = codec.decode(strings)
    return (float(np.mean([bpp(b, t.shape[1] * t.shape[2]) for t, b in zip(tiles, strings)])),
            float(np.mean([psnr(t, r) for t, r in zip(tiles, recon)])))


def measure(model, checkpoint: Path, levels: list[float], n_search: int, crop: int,
            steps: int) -> dict:
    """Every figure of the report, level by level.

    Args:
        model: the weights, loaded in float32 (``load_checkpoint``).
        checkpoint: their file (the real codec loads it by path, as users do).
        levels: the levels to measure, the top one last (the goal reads it).
        n_search: how many evenly spaced test tiles the crops come from.
        crop: the crops' side (centre of each tile).
        steps: the decoder search's Adam steps.

    Returns:
        The JSON the report is written from.
    """
    tiles, _ = test_tiles(DATASETS["rs-v1"])
    pos = np.linspace(0, len(tiles) - 1, n_search).round().astype(int)
    lo = (tiles[0].shape[1] - crop) // 2
    sub = [np.ascontiguousarray(tiles[p][:, lo:lo + crop, lo:lo + crop]) for p in pos]
    j2k = j2k_curve(sub, ms_ssim=False)  # crops too small for MS-SSIM's five scales
    j2k = j2k[rd_front(j2k[:, 0], j2k[:, 1])]  # on small crops the lowest rates all cost the header
    rows = []
    for level in levels:
        rate, cod = codec_point(checkpoint, level, sub)
        model.set_rate(level)
        ceil = float(np.mean(ceiling(model, tiles)))
        sub_ceil = float(np.mean(ceiling(model, sub)))
        found = float(np.mean(decoder_search(model, sub, steps, level=level)))
        rows.append({"level": level, "ceiling_psnr": ceil, "crops_bpp": rate, "crops_psnr": cod,
                     "crops_ceiling_psnr": sub_ceil, "crops_searched_psnr": found,
                     "crops_j2k_psnr_at_bpp": float(interp_psnr_at_rate(j2k[:, 0], j2k[:, 1], rate))})
        print(f"level {level:g}: g_s(g_a(x)) {ceil:.2f} dB; crops: codec {rate:.3f} bpp {cod:.2f} dB, "
              f"g_s(g_a(x)) {sub_ceil:.2f}, best latent {found:.2f}, JPEG 2000 "
              f"{rows[-1]['crops_j2k_psnr_at_bpp']:.2f} dB", flush=True)
    return {"checkpoint": str(checkpoint), "meta_steps": total_steps(getattr(model, "meta", None) or {}),
            "cpu": cpu_label(),
            "tiles": len(tiles), "search_tile_index": [int(p) for p in pos], "crop": crop,
            "steps": steps, "rows": rows}


def report(res: dict) -> list[str]:
    lines = ["# What binds the variable-rate MGSSNet: ceiling and decoder search per level", "",
             f"Weights `{res['checkpoint']}` ({res['meta_steps']} steps in all), measured by "
             f"`benchmarks/vr_ceiling.py` on {res['cpu']}, float32. Ceiling: PSNR of `g_s(g_a(x))` "
             f"unquantized on the {res['tiles']} test tiles. Crops: the centre {res['crop']} x {res['crop']} "
             f"of {len(res['search_tile_index'])} evenly spaced test tiles, coded by the real codec and "
             f"by JPEG 2000; best latent: the synthesis layers' input searched by {res['steps']} Adam "
             "steps (lr 5e-3) on MSE alone, what `g_s` gives with the best latent it can be handed.", "",
             "| level | ceiling (test split) | crops: codec bpp | crops: codec PSNR | crops: g_s(g_a(x)) "
             "| crops: best latent | crops: JPEG 2000 at the codec's bpp |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['level']:g} | {r['ceiling_psnr']:.2f} | {r['crops_bpp']:.3f} | {r['crops_psnr']:.2f} | "
                     f"{r['crops_ceiling_psnr']:.2f} | {r['crops_searched_psnr']:.2f} | "
                     f"{r['crops_j2k_psnr_at_bpp']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="variable-rate MGSSNet weights")
    p.add_argument("--levels", type=float, nargs="+", help="levels (default: 7 and the top)")
    p.add_argument("--search-tiles", type=int, default=8, help="tiles for the decoder search (default 8)")
    p.add_argument("--crop", type=int, default=128, help="centre crop for the search (default 128)")
    p.add_argument("--steps", type=int, default=150, help="decoder search steps (default 150)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=CATALOG / "mgssnet-vr-ceiling",
                   help="output path without suffix (default catalogs/models/mgssnet-vr-ceiling)")
    a = p.parse_args(argv)
    if a.search_tiles < 1 or a.steps < 1 or not 16 <= a.crop <= 256:
        p.error("--search-tiles and --steps must be >= 1 and --crop within 16..256")
    import torch

    torch.set_num_threads(a.threads)
    from geocompress.codec.weights import load_checkpoint

    model = load_checkpoint(a.checkpoint).float().eval()
    levels = a.levels or [7.0, float(model.levels - 1)]
    res = measure(model, a.checkpoint, levels, a.search_tiles, a.crop, a.steps)
    lines = report(res)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    top = res["rows"][-1]
    margin = top["crops_searched_psnr"] - top["crops_j2k_psnr_at_bpp"]
    ok = margin >= 0
    verdict = (f"decoder search at level {top['level']:g} against JPEG 2000 at the codec's "
               f"{top['crops_bpp']:.3f} bpp on the same crops: {margin:+.2f} dB: {'PASS' if ok else 'FAIL'}")
    lines += ["", verdict]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
