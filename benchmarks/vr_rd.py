"""The variable-rate MGSSNet's RD curve against the classical codecs and the fixed-rate ladder.

    .venv/bin/python benchmarks/vr_rd.py --checkpoint catalogs/models/wip/mgssnet-vr.pt

On the test split of ``geocompress-rs-v1`` (the tiles every figure of the project is measured on)
and, apart, on the test split of ``geocompress-rs-extra-v1`` (the 10-200 m Landsat / Sentinel
scenes), every tile is coded through the real codec (every byte of every string counted) at each
of ``--levels`` (default: every integer level the weights have) and by JPEG 2000 (OpenJPEG), JPEG XL
(libjxl), HEVC intra (x265 in HEIF, the BPG-like anchor) and AVIF (libaom) over their default
parameter grids. Curves are means over tiles of bpp and of per-tile PSNR (8-bit peak) and
MS-SSIM dB, as in ``rd_vs_jpeg2000.py``.

Prints and writes (``catalogs/models/mgssnet-vr-rd.{json,md,png}``):

* the curve, its rate span and, per level, the PSNR of each classical codec at the same bpp;
* BD-rate / BD-PSNR against each classical codec and against the fixed-rate ladder q1-q4 (its
  points from ``catalogs/models/rd_vs_jpeg2000.json``, same tiles), over the shared range;
* per source of the test split: BD-rate against JPEG 2000, worst first;
* a plot of the curves.

The classical codecs' per-tile records are cached in ``catalogs/models/classical-test-split.json``
(they do not change between sessions; ``--refresh-classical`` recomputes them).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / "catalogs" / "models"
DATASETS = {"rs-v1": REPO / "data" / "geocompress-rs-v1.zarr",
            "extra": REPO / "data" / "geocompress-rs-extra-v1.zarr"}
CLASSICAL = ("jpeg2000", "jpegxl", "bpg-hevc", "avif")
LABELS = {"jpeg2000": "JPEG 2000", "jpegxl": "JPEG XL", "bpg-hevc": "HEVC intra (BPG-like)",
          "avif": "AVIF", "ladder": "MGSSNet q1-q4 (fixed-rate)"}
CLASSICAL_CACHE = CATALOG / "classical-test-split.json"


def test_tiles(store: Path) -> tuple[list[np.ndarray], list[str]]:
    """The test split's tiles (3 x 256 x 256 uint8) and the source (or ``dataset/class``) of each,
    read as ``ship_weights.py`` and ``rd_vs_jpeg2000.py`` read them."""
    import sys

    sys.path[:0] = [str(REPO / "pipelines"), str(REPO / "benchmarks")]
    from rd_vs_jpeg2000 import source_names
    from ship_weights import test_tiles as split_tiles

    from geocompress.training import TileDataset

    tiles, index = split_tiles(store, None)
    return tiles, source_names(TileDataset(store, "test", crop=None, augment=False, cache=False), index)


def _point(orig: np.ndarray, recon: np.ndarray, nbytes: int) -> list[float]:
    from geocompress.metrics import ms_ssim_db, psnr

    return [nbytes * 8 / (orig.shape[1] * orig.shape[2]), psnr(orig, recon), ms_ssim_db(orig, recon)]


def classical_records(name: str, tiles: list[np.ndarray], key: str, refresh: bool) -> dict[str, list]:
    """``{param: [[bpp, psnr, ms_ssim_db] per tile]}`` for one classical codec (cached)."""
    from geocompress.evaluation import classical as C

    cache = json.loads(CLASSICAL_CACHE.read_text()) if CLASSICAL_CACHE.exists() else {}
    entry = cache.get(key, {}).get(name)
    if entry is not None and not refresh and all(len(v) == len(tiles) for v in entry.values()):
        return entry
    if not C.get_codec(name).available:
        return {}
    out = {}
    for p in C.get_codec(name).default_grid:
        rows = []
        for t in tiles:
            hwc = np.ascontiguousarray(t.transpose(1, 2, 0))
            data, dec = C.roundtrip(name, hwc, p)
            rows.append(_point(t, dec.reshape(hwc.shape).transpose(2, 0, 1), len(data)))
        out[str(p)] = rows
    cache.setdefault(key, {})[name] = out
    CLASSICAL_CACHE.write_text(json.dumps(cache) + "\n")
    return out


def learned_records(checkpoint: Path, tiles: list[np.ndarray], levels: list[float],
                    precision: str) -> tuple[dict[str, list], dict]:
    """``{level: [[bpp, psnr, ms_ssim_db] per tile]}`` through the real codec, and timings."""
    from geocompress import load_codec

    out, timing = {}, {}
    codec = load_codec(checkpoint=str(checkpoint), quality=levels[0], precision=precision, batch_size=8)
    for q in levels:
        codec.set_level(q)
        t0 = time.perf_counter()
        strings = codec.encode(tiles)
        t1 = time.perf_counter()
        recon = codec.decode(strings)
        t2 = time.perf_counter()
        out[str(q)] = [_point(t, r, len(s)) for t, r, s in zip(tiles, recon, strings)]
        timing[str(q)] = {"encode_s_per_tile": round((t1 - t0) / len(tiles), 4),
                          "decode_s_per_tile": round((t2 - t1) / len(tiles), 4)}
        m = np.mean(out[str(q)], axis=0)
        print(f"  level {q}: {m[0]:.4f} bpp, {m[1]:.2f} dB, {m[2]:.2f} dB MS-SSIM", flush=True)
    return out, timing


def curve(records: dict[str, list], index: list[int] | None = None) -> np.ndarray:
    """Rows (setting, mean bpp, mean PSNR, mean MS-SSIM dB) sorted by bpp, over ``index``."""
    rows = []
    for p, per_tile in records.items():
        a = np.asarray(per_tile, dtype=float)
        a = a[index] if index is not None else a
        rows.append([float(p), *a.mean(axis=0)])
    rows = np.asarray(rows, dtype=float).reshape(-1, 4)
    return rows[np.argsort(rows[:, 1])]


def _front(c: np.ndarray) -> np.ndarray:
    """The curve's points that lie on its rate-distortion front (PSNR rising with rate)."""
    from geocompress.evaluation.bd import rd_front

    return c[rd_front(c[:, 1], c[:, 2])] if len(c) else c


def bd(anchor: np.ndarray, test: np.ndarray, col: int = 2) -> dict[str, float | None]:
    """BD-rate (%) and BD-PSNR (dB) of ``test`` against ``anchor`` over their shared range."""
    from geocompress.evaluation.bd import bd_psnr, bd_rate

    a, t = _front(anchor), _front(test)
    if len(a) < 2 or len(t) < 2:
        return {"bd_rate_percent": None, "bd_psnr_db": None}
    lo, hi = max(a[:, 1].min(), t[:, 1].min()), min(a[:, 1].max(), t[:, 1].max())
    if hi <= lo:
        return {"bd_rate_percent": None, "bd_psnr_db": None}
    out = {}
    for key, fn in (("bd_rate_percent", bd_rate), ("bd_psnr_db", bd_psnr)):
        try:
            v = float(fn(a[:, 1], a[:, col], t[:, 1], t[:, col]))
            out[key] = round(v, 3) if math.isfinite(v) else None
        except ValueError:
            out[key] = None
    out["shared_bpp"] = [round(float(lo), 4), round(float(hi), 4)]
    return out


def ladder_curve() -> np.ndarray:
    rows = json.loads((CATALOG / "rd_vs_jpeg2000.json").read_text())["rows"]
    return np.asarray([[r["quality"], r["bpp"], r["psnr"], r["ms_ssim_db"]] for r in rows], float)


def evaluate_set(key: str, checkpoint: Path, levels: list[float], precision: str,
                 refresh: bool) -> dict:
    tiles, names = test_tiles(DATASETS[key])
    print(f"{key}: {len(tiles)} test tiles", flush=True)
    classical = {c: classical_records(c, tiles, key, refresh) for c in CLASSICAL}
    classical = {c: r for c, r in classical.items() if r}
    vr, timing = learned_records(checkpoint, tiles, levels, precision)
    vr_curve = curve(vr)
    curves = {c: curve(r) for c, r in classical.items()}
    res = {"tiles": len(tiles), "levels": levels, "timing": timing,
           "curve": vr_curve.tolist(), "classical_curves": {c: v.tolist() for c, v in curves.items()},
           "bd": {c: {"psnr": bd(v, vr_curve), "ms_ssim_db": bd(v, vr_curve, col=3)}
                  for c, v in curves.items()}}
    if key == "rs-v1":
        lad = ladder_curve()
        res["ladder_curve"] = lad.tolist()
        res["bd"]["ladder"] = {"psnr": bd(lad, vr_curve), "ms_ssim_db": bd(lad, vr_curve, col=3)}
    by_source = []
    if "jpeg2000" in classical:
        for src in sorted(set(names)):
            idx = [i for i, n in enumerate(names) if n == src]
            b = bd(curve(classical["jpeg2000"], idx), curve(vr, idx))
            by_source.append({"source": src, "tiles": len(idx), **b})
        by_source.sort(key=lambda r: -(r["bd_rate_percent"] if r["bd_rate_percent"] is not None else -1e9))
    res["by_source"] = by_source
    return res


def write_report(out: dict, dest: Path) -> None:
    lines = ["# Variable-rate MGSSNet: RD on the test split against the classical codecs",
             "", f"Weights `{out['checkpoint']}` ({out['meta_steps']} steps in all), measured by "
             f"`benchmarks/vr_rd.py` on {out['cpu']} ({out['precision']} transforms). Every string's "
             "bytes counted; PSNR with the 8-bit peak, mean over tiles. BD figures are over the "
             "shared bpp range of the two curves (negative BD-rate: fewer bits than the anchor).", ""]
    for key, res in out["sets"].items():
        lines += [f"## {key} test split ({res['tiles']} tiles)", "",
                  "| level | lambda | bpp | PSNR dB | MS-SSIM dB | encode s/tile | decode s/tile |",
                  "|---|---|---|---|---|---|---|"]
        lambdas = out.get("level_lambdas") or []
        for q, b, p, m in res["curve"]:
            t = res["timing"][str(q)]
            lam = f"{lambdas[int(q)]:g}" if q == int(q) and int(q) < len(lambdas) else "-"
            lines.append(f"| {q:g} | {lam} | {b:.4f} | {p:.2f} | {m:.2f} | {t['encode_s_per_tile']} | "
                         f"{t['decode_s_per_tile']} |")
        lines += ["", "| anchor | BD-rate % (PSNR) | BD-PSNR dB | BD-rate % (MS-SSIM dB) | shared bpp |",
                  "|---|---|---|---|---|"]
        for c, v in res["bd"].items():
            p, m = v["psnr"], v["ms_ssim_db"]
            lines.append(f"| {LABELS.get(c, c)} | {p['bd_rate_percent']} | {p['bd_psnr_db']} | "
                         f"{m['bd_rate_percent']} | {p.get('shared_bpp')} |")
        if res["by_source"]:
            lines += ["", "BD-rate against JPEG 2000 by source, worst first:", "",
                      "| source | tiles | BD-rate % | BD-PSNR dB | shared bpp |", "|---|---|---|---|---|"]
            for r in res["by_source"]:
                lines.append(f"| {r['source']} | {r['tiles']} | {r['bd_rate_percent']} | "
                             f"{r['bd_psnr_db']} | {r.get('shared_bpp')} |")
        lines.append("")
    lines += [f"![RD curves]({dest.with_suffix('.png').name})", ""]
    dest.with_suffix(".md").write_text("\n".join(lines))


def plot(out: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = out["sets"]
    fig, axes = plt.subplots(1, len(sets), figsize=(6.5 * len(sets), 4.8), squeeze=False)
    for ax, (key, res) in zip(axes[0], sets.items()):
        for c, v in res["classical_curves"].items():
            v = np.asarray(v)
            ax.plot(v[:, 1], v[:, 2], "o--", ms=3, lw=1, label=LABELS.get(c, c))
        if "ladder_curve" in res:
            v = np.asarray(res["ladder_curve"])
            ax.plot(v[:, 1], v[:, 2], "s:", ms=4, lw=1, label=LABELS["ladder"])
        v = np.asarray(res["curve"])
        ax.plot(v[:, 1], v[:, 2], "o-", ms=4, lw=2, color="k",
                label=f"MGSSNet-VR (levels {v[0, 0]:g}-{v[-1, 0]:g})")
        ax.set_xscale("log")
        ax.set_xlabel("bpp (every byte counted)")
        ax.set_ylabel("PSNR dB (eq. 10, 8-bit peak)")
        ax.set_title(f"{key} test split, {res['tiles']} tiles")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest.with_suffix(".png"), dpi=110)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=CATALOG / "wip" / "mgssnet-vr.pt")
    p.add_argument("--levels", type=float, nargs="+", default=None,
                   help="levels to code at (default: every integer level the weights have)")
    p.add_argument("--sets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--refresh-classical", action="store_true")
    p.add_argument("--out", type=Path, default=CATALOG / "mgssnet-vr-rd",
                   help="where the .json, .md and .png go (default: the catalog's; another path "
                        "measures a candidate without replacing the record)")
    p.add_argument("--classical-only", action="store_true",
                   help="only fill the classical codecs' cache (no checkpoint needed)")
    a = p.parse_args(argv)
    if a.classical_only:
        for key in a.sets:
            tiles, _ = test_tiles(DATASETS[key])
            for c in CLASSICAL:
                t0 = time.time()
                n = len(classical_records(c, tiles, key, a.refresh_classical))
                print(f"{key} {c}: {n} settings, {time.time() - t0:.0f} s", flush=True)
        return
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from _common import cpu_label, total_steps

    from geocompress.codec import load_checkpoint, state_digest
    from geocompress.codec.precision import resolve_precision

    ckpt = torch.load(a.checkpoint, map_location="cpu", weights_only=True)
    meta = ckpt.get("meta", {})
    if a.levels is None:
        a.levels = [float(q) for q in range(int(ckpt.get("config", {}).get("levels", 9)))]
    out = {"checkpoint": str(a.checkpoint.relative_to(REPO)) if a.checkpoint.is_relative_to(REPO) else str(a.checkpoint),
           "meta_steps": total_steps(meta), "cpu": cpu_label(),
           "digest": state_digest(load_checkpoint(a.checkpoint).state_dict()),  # what ship_vr checks
           "level_lambdas": meta.get("level_lambdas"),
           "precision": resolve_precision(a.precision, "cpu"),
           "sets": {k: evaluate_set(k, a.checkpoint, a.levels, a.precision, a.refresh_classical)
                    for k in a.sets}}
    a.out.with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")
    write_report(out, a.out)
    plot(out, a.out)
    print(a.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
