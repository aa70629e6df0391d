"""Transform ceiling of the shipped MGSSNet: what its analysis/synthesis pair gives with no
quantization at all, against JPEG 2000 at the codec's own rate, on the test split.

    .venv/bin/python benchmarks/transform_ceiling.py [--history] [--qualities 3 4]

``g_s(g_a(x))`` with unquantized latents is an upper bound on what any entropy model or context
model can recover from these transforms: the bits only decide how much of it survives quantization.
(Encoder-side refinement searches past ``g_a``'s output for the fixed synthesis; its measured gain,
``refine_gain.md``, says how far that gets.) When the ceiling lies *below* JPEG 2000's PSNR at the
quality's own bpp, no amount of entropy-model training closes the gap; only better transforms (more
steps, a larger N / M) can. Per quality it prints the codec's measured bpp and PSNR (``mgssnet-test-tiles.json``,
every byte counted), the ceiling, the quantization loss (ceiling - codec), JPEG 2000's PSNR at that
bpp (the curve of ``rd_vs_jpeg2000.json``, same tiles), the ceiling's headroom over it, and the rate
JPEG 2000 needs to equal the ceiling. Goal: headroom > 0 at every quality; exits 1 otherwise.

``--decoder-steps S`` also asks how much the *synthesis* alone can give: on an evenly spaced subset
of the test tiles it searches the latent for the fixed ``g_s`` by S Adam steps on MSE alone (no
rate term, no quantization) from ``g_a(x)``, against JPEG 2000's curve on the same subset. Below
JPEG 2000 even then, the decoder binds too and the fix is training, not a better encoder.

``--history`` also measures the ceiling of every shipped version of the chosen qualities from git
history (needs a full clone) against its total training steps: how fast the transforms improve
per step on this hardware, i.e. how far a quality is from its goal in compute (a later run without
``--history`` keeps it while the shipped weights are the last version in it). Writes
``catalogs/models/transform_ceiling.{md,json}`` (and ``transform_ceiling_history.png``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rd_vs_jpeg2000 import CATALOG, DATASET, j2k_curve  # noqa: E402
from refine_gain import subset  # noqa: E402

from geocompress.evaluation.bd import interp_psnr_at_rate, interp_rate_at_psnr  # noqa: E402
from geocompress.metrics import psnr  # noqa: E402
from geocompress.training import TileDataset  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "geocompress/weights/mgssnet-q{q}.pt"


def ceiling(model, tiles: list[np.ndarray]) -> list[float]:
    """Per-tile PSNR of g_s(g_a(x)), rounded to the tiles' 8 bits as the decoder's output is."""
    import torch

    model = model.float().eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(tiles), 8):
            x = torch.from_numpy(np.stack(tiles[i:i + 8]).astype(np.float32) / 255)
            back = (model.g_s(model.g_a(x)).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            out += [psnr(t, b) for t, b in zip(tiles[i:i + 8], back)]
    return out


def decoder_search(model, tiles: list[np.ndarray], steps: int, lr: float = 5e-3,
                   level: float | None = None) -> list[float]:
    """Per-tile PSNR of g_s(y) for the latent y found by ``steps`` Adam steps on MSE from g_a(x).

    A variable-rate model (``level`` given) is searched at that level in its synthesis layers' own
    input, the inverse-gained latent (``g_s.ungained``): the layers every level shares, with Adam
    steps of one size at every level.
    """
    import torch

    model = model.float().eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    x = torch.from_numpy(np.stack(tiles).astype(np.float32) / 255)
    synth = model.g_s
    with torch.no_grad():
        if level is None:
            y = model.g_a(x)
        else:
            model.set_rate(float(level))
            y = model.g_a(x) * model.gain_vectors(torch.tensor([float(level)]), inverse=True)
            synth = model.g_s.ungained
    y.requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)
    for _ in range(steps):
        loss = ((synth(y) - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        back = (synth(y).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [psnr(t, b) for t, b in zip(tiles, back)]


def searched(measured: dict, shipped_rows: list[dict], qualities: list[int], steps: int, n: int) -> dict:
    """The decoder search on ``refine_gain``'s ``n`` evenly spaced test tiles (its figures sit beside
    these), with JPEG 2000's curve over the same tiles; their g_s(g_a(x)) comes from ``shipped``."""
    from geocompress.codec import load_codec

    index, sub = subset(n)
    where = {int(g): i for i, g in enumerate(measured["tile_index"])}
    pts = j2k_curve(sub)
    rows = []
    for q in qualities:
        per = [measured["qualities"][str(q)][where[g]] for g in index]
        row = next(r for r in shipped_rows if r["quality"] == q)
        bpp = float(np.mean([r["bpp"] for r in per]))
        model = load_codec("mgssnet", quality=q).model
        enc = float(np.mean([row["ceiling_per_tile"][where[g]] for g in index]))
        dec = float(np.mean(decoder_search(model, sub, steps)))
        j2k = float(interp_psnr_at_rate(pts[:, 0], pts[:, 1], bpp))
        rows.append({"quality": q, "bpp": bpp, "psnr": float(np.mean([r["psnr"] for r in per])),
                     "ceiling_psnr": enc, "searched_psnr": dec, "j2k_psnr_at_bpp": j2k,
                     "searched_minus_j2k_db": dec - j2k})
        print(f"q{q} decoder search: {dec:.2f} dB (g_s(g_a(x)) {enc:.2f}, JPEG 2000 {j2k:.2f})", flush=True)
    return {"tile_index": index, "steps": steps, "rows": rows}


def shipped(tiles: list[np.ndarray], measured: dict, catalog: dict, curve: dict) -> list[dict]:
    from geocompress.codec import load_codec

    rows = []
    for q in sorted(measured["qualities"], key=int):
        codec = load_codec("mgssnet", quality=int(q))  # verifies the shipped digest
        entry = next(e for e in catalog["qualities"] if e["quality"] == int(q))
        if entry["digest"] != codec.digest:
            sys.exit(f"catalogs/models/mgssnet.json describes other q{q} weights than the shipped "
                     "ones; rerun pipelines/ship_weights.py first")
        per = measured["qualities"][q]
        bpp, cod = float(np.mean([r["bpp"] for r in per])), float(np.mean([r["psnr"] for r in per]))
        per_tile = ceiling(codec.model, tiles)
        ceil = float(np.mean(per_tile))
        j2k = float(interp_psnr_at_rate(curve["bpp"], curve["psnr"], bpp))
        rows.append({"quality": int(q), "bpp": bpp, "psnr": cod, "ceiling_psnr": ceil,
                     "quantization_loss_db": ceil - cod, "j2k_psnr_at_bpp": j2k, "headroom_db": ceil - j2k,
                     "j2k_bpp_at_ceiling": float(interp_rate_at_psnr(curve["bpp"], curve["psnr"], ceil)),
                     "ceiling_per_tile": per_tile})
    return rows


def _git(*args: str) -> bytes:
    return subprocess.check_output(["git", "-C", str(REPO), *args])


def history(tiles: list[np.ndarray], qualities: list[int]) -> list[dict]:
    """The ceiling of every shipped version of ``qualities``, oldest first, from git history."""
    from geocompress.codec.weights import load_checkpoint

    rows = []
    for q in qualities:
        revs = _git("log", "--format=%h", "--", WEIGHTS.format(q=q)).decode().split()[::-1]
        for version, rev in enumerate(revs, 1):
            entry = next(e for e in json.loads(_git("show", f"{rev}:catalogs/models/mgssnet.json"))["qualities"]
                         if e["quality"] == q)
            with tempfile.NamedTemporaryFile(suffix=".pt") as f:
                f.write(_git("show", f"{rev}:{WEIGHTS.format(q=q)}"))
                f.flush()
                model = load_checkpoint(f.name)
            rows.append({"quality": q, "version": version, "rev": rev,
                         "steps": int(entry.get("total_steps", entry["steps"])),
                         "bpp": entry["test"]["bpp"], "psnr": entry["test"]["psnr"],
                         "ceiling_psnr": float(np.mean(ceiling(model, tiles)))})
            print(f"q{q} {rev} {rows[-1]['steps']:>6} steps: ceiling {rows[-1]['ceiling_psnr']:.2f} dB, "
                  f"codec {rows[-1]['psnr']:.2f} dB", flush=True)
    return rows


def _still_current(path: Path) -> list[dict]:
    """A previous run's history, kept while its last version of each quality is the latest in git."""
    if not path.exists():
        return []
    hist = json.loads(path.read_text()).get("history", [])
    for q in {h["quality"] for h in hist}:
        try:
            latest = _git("log", "-1", "--format=%h", "--", WEIGHTS.format(q=q)).decode().strip()
        except (OSError, subprocess.CalledProcessError):
            return []
        if [h for h in hist if h["quality"] == q][-1]["rev"] != latest:
            return []
    return hist


def report(res: dict) -> list[str]:
    lines = ["# Transform ceiling of the shipped MGSSNet (test split)", "",
             f"{res['tiles']} test tiles of `{res['dataset']}`. Ceiling: PSNR of `g_s(g_a(x))` with "
             "unquantized latents (rounded to 8 bits), the most any entropy model could recover from "
             "these transforms (refinement, which searches past `g_a`, is measured in `refine_gain.md`). "
             "JPEG 2000: the OpenJPEG curve of `rd_vs_jpeg2000.json` on the same tiles, read at the codec's bpp. "
             "Measured by `benchmarks/transform_ceiling.py`.", "",
             "| quality | bpp | codec PSNR | ceiling | quantization loss | JPEG 2000 at bpp | "
             "ceiling - JPEG 2000 | JPEG 2000 bpp at the ceiling |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['quality']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['ceiling_psnr']:.2f} | "
                     f"{r['quantization_loss_db']:.2f} | {r['j2k_psnr_at_bpp']:.2f} | **{r['headroom_db']:+.2f}** | "
                     f"{r['j2k_bpp_at_ceiling']:.3f} |")
    bound = [r["quality"] for r in res["rows"] if r["headroom_db"] <= 0]
    lines += ["", "Qualities whose transforms bind (ceiling at or below JPEG 2000 at their own rate): "
              + (", ".join(f"q{q}" for q in bound) if bound else "none") + "."]
    if res.get("decoder_search"):
        d = res["decoder_search"]
        lines += ["", "## What the synthesis alone can give (decoder search)", "",
                  f"{len(d['tile_index'])} evenly spaced of the tiles above; the latent for the fixed `g_s` "
                  f"searched by {d['steps']} Adam steps (lr 5e-3) on MSE alone from `g_a(x)`, unquantized, no "
                  "rate term; JPEG 2000's curve measured on the same tiles.", "",
                  "| quality | bpp | codec PSNR | g_s(g_a(x)) | best latent found | JPEG 2000 at bpp | "
                  "found - JPEG 2000 |",
                  "|---|---|---|---|---|---|---|"]
        for r in d["rows"]:
            lines.append(f"| {r['quality']} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['ceiling_psnr']:.2f} | "
                         f"{r['searched_psnr']:.2f} | {r['j2k_psnr_at_bpp']:.2f} | "
                         f"**{r['searched_minus_j2k_db']:+.2f}** |")
    if res.get("history"):
        lines += ["", "## Ceiling of every shipped version", "",
                  "| quality | version | commit | total steps | bpp | codec PSNR | ceiling |",
                  "|---|---|---|---|---|---|---|"]
        for h in res["history"]:
            lines.append(f"| {h['quality']} | v{h['version']} | `{h['rev']}` | {h['steps']} | {h['bpp']:.3f} | "
                         f"{h['psnr']:.2f} | {h['ceiling_psnr']:.2f} |")
        lines += ["", "![ceiling vs steps](transform_ceiling_history.png)"]
    return lines


def plot_history(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    now = {r["quality"]: r for r in res["rows"]}
    for i, q in enumerate(sorted({h["quality"] for h in res["history"]})):
        hs = [h for h in res["history"] if h["quality"] == q]
        # a version with fewer steps than its predecessor was trained from scratch: a new lineage,
        # drawn apart (hollow markers) from the current one
        start = max([0] + [k for k in range(1, len(hs)) if hs[k]["steps"] < hs[k - 1]["steps"]])
        old, hs = hs[:start], hs[start:]
        color = f"C{i}"
        ax.plot([h["steps"] for h in old], [h["ceiling_psnr"] for h in old], "o", color=color, mfc="none")
        ax.plot([h["steps"] for h in hs], [h["ceiling_psnr"] for h in hs], "o-", color=color,
                label=f"q{q} ceiling (no quantization)")
        ax.plot([h["steps"] for h in hs], [h["psnr"] for h in hs], "s--", color=color, ms=3, alpha=0.7,
                label=f"q{q} codec")
        if q in now:
            ax.axhline(now[q]["j2k_psnr_at_bpp"], color=color, ls=":",
                       label=f"JPEG 2000 at q{q}'s {now[q]['bpp']:.3f} bpp")
    ax.set_xlabel("total training steps (batch 8 of 128 x 128 crops, CPU)")
    ax.set_ylabel("PSNR (dB), test split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(CATALOG / "transform_ceiling_history.png", dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--history", action="store_true", help="also measure every shipped version (git history)")
    p.add_argument("--qualities", type=int, nargs="+", default=[3, 4],
                   help="qualities for --history and --decoder-steps (default 3 4)")
    p.add_argument("--decoder-steps", type=int, default=0, help="decoder search steps (default 0: skip)")
    p.add_argument("--search-tiles", type=int, default=12, help="tiles for the decoder search (default 12)")
    args = p.parse_args()
    import torch

    torch.set_num_threads(2)
    measured = json.loads((CATALOG / "mgssnet-test-tiles.json").read_text())
    catalog = json.loads((CATALOG / "mgssnet.json").read_text())
    rd = json.loads((CATALOG / "rd_vs_jpeg2000.json").read_text())
    if rd["tiles"] != len(measured["tile_index"]):
        sys.exit("rd_vs_jpeg2000.json was measured on other tiles; rerun benchmarks/rd_vs_jpeg2000.py")
    ds = TileDataset(DATASET, "test", crop=None, augment=False)
    pos = {int(g): i for i, g in enumerate(ds.indices)}
    tiles = [ds.pixels(pos[g]) for g in measured["tile_index"]]

    rows = shipped(tiles, measured, catalog, rd["jpeg2000_curve"])
    res = {"dataset": DATASET.name, "tiles": len(tiles), "rows": rows}
    if args.decoder_steps:
        res["decoder_search"] = searched(measured, rows, args.qualities, args.decoder_steps, args.search_tiles)
    if args.history:
        res["history"] = history(tiles, args.qualities)
        plot_history(res)
    else:
        res["history"] = _still_current(CATALOG / "transform_ceiling.json")
    lines = report(res)
    (CATALOG / "transform_ceiling.json").write_text(json.dumps(res, indent=1) + "\n")
    (CATALOG / "transform_ceiling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:6 + len(res["rows"])]))
    ok = all(r["headroom_db"] > 0 for r in res["rows"])
    print(f"ceiling above JPEG 2000 at every quality: {'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
