"""Whole scenes through the CLI, as users code them, against four classical codecs (issue 35, item 5).

    .venv/bin/python benchmarks/scene_rd.py [--scenes NAME ...] [--levels L ...] [--threads 1]

Each scene (a real GeoTIFF of the shared data: 8- and 16-bit, 1 to 7 bands, 0.6 to 60 m) is coded
whole by ``geocompress compress`` with the defaults a user gets (tiling, nodata / constant tile
dropping, ``--halo auto``, ``--bits auto``) and decoded by ``geocompress decompress``:

* the shipped fixed-rate ladder, ``--quality 1..4`` (halo coding where the quality ships its
  prior);
* the variable-rate model in progress, ``--arch mgssnet-vr --checkpoint
  catalogs/models/wip/mgssnet-vr.pt --quality L`` at every level ``--levels``.

Rate: every byte of the tile strings over the scene's pixels (``info --json``'s ``bpp``). Quality:
PSNR over every band and the source's valid pixels, peak ``2**bits - 1`` with the bit depth the
store records (what ``--target-psnr`` means); a codec that gets a pixel wrong where the source is
nodata is not penalised, one that drops valid pixels is.

The classical codecs code the same pixels band group by band group (three bands, then single
bands: what each supports), every group at the same setting, and are counted the same way (all
their bytes over the scene's pixels): JPEG 2000 (OpenJPEG, rate-controlled) and JPEG XL (libjxl)
on every scene, AVIF and HEVC intra (x265 in HEIF) where the scene is 8-bit (their 16-bit modes
stop at 12 bits). Settings and backends: :mod:`geocompress.evaluation.classical`.

BD-rate (Bjontegaard, pchip over log rate; negative = fewer bits at equal PSNR) of each MGSSNet
curve against each classical codec, per scene and as the mean over scenes, and of the
variable-rate curve against the ladder. The aim behind issue 35 is to need fewer bits than every
one of them on every scene: the run exits 1 when the variable-rate model's mean BD-rate against
any classical codec is positive. Figures go to ``catalogs/models/scene_rd.{md,json,png}``.

The scenes' tiles are split 8:1:1 into the training data (``geocompress-rs-v1`` /
``geocompress-rs-extra-v1``): these figures compare the codecs as users run them, not how the
model generalizes (for that: the test splits in ``catalogs/models/mgssnet-vr-rd.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cpu_label, data_dir, geocompress_cmd  # noqa: E402

CATALOG = REPO / "catalogs" / "models"
VR_WEIGHTS = CATALOG / "wip" / "mgssnet-vr.pt"
# name -> path under the data folder: the kinds users compress (aerial 8-bit RGB, 16-bit
# Landsat / Sentinel-2 at 10-60 m, multi-band 8-bit, panchromatic)
SCENES = {
    "sample, aerial RGB 0.6 m (8-bit)": "scenes/aerial_korea_0.6m_cogeo.tif",
    "Landsat 8 RGB 60 m (16-bit)": "scenes/landsat8_grenada_rgb16.tif",
    "Landsat 8 B2-B5 30 m (16-bit, 4 bands)": "scenes-extra/landsat8_B2-B5_30m_zion_utah.tif",
    "Sentinel-2 B4 10 m (16-bit, 1 band)": "scenes-extra/sentinel2_l1c_10m_havelland_brandenburg_20160608.tif",
    "Sentinel-2 B2-B4-B8 10 m (8-bit, 4 bands)": "scenes-extra/sentinel2_l1c_B2-B4-B8_10m_beaufort_nc_coast.tif",
    "Landsat 5 TM 30 m (8-bit, 7 bands, nodata)": "scenes-extra/landsat5_tm_7band_30m_para_brazil.tif",
}
J2K_RATES = (0.03, 0.05, 0.08, 0.12, 0.18, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0)
JXL_PARAMS = (5, 15, 30, 45, 60, 70, 80, 88, 94)
AVIF_PARAMS = (10, 25, 40, 52, 62, 70, 78, 86)
HEVC_QP = (47, 43, 39, 35, 31, 27, 23)
CLASSICAL = {"jpeg2000": "JPEG 2000", "jpegxl": "JPEG XL", "avif": "AVIF", "bpg-hevc": "HEVC intra"}


def read_scene(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The scene's bands (``C x H x W``) and its validity (``H x W``, GDAL's dataset mask)."""
    with rasterio.open(path) as d:
        return d.read(), d.dataset_mask() > 0


def scene_psnr(x: np.ndarray, y: np.ndarray, valid: np.ndarray, bits: int) -> float:
    """PSNR over every band and the valid pixels, peak ``2**bits - 1``."""
    d = (x.astype(np.float64) - y.astype(np.float64))[:, valid]
    mse = float((d ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10((2 ** bits - 1) ** 2 / mse)


def band_groups(count: int) -> list[list[int]]:
    """Three bands at a time, then the rest one by one: what every classical codec here takes."""
    groups = [list(range(i, i + 3)) for i in range(0, count - count % 3, 3)]
    return groups + [[i] for i in range(count - count % 3, count)]


def classical_curve(name: str, x: np.ndarray, valid: np.ndarray, bits: int) -> list[tuple[float, float]]:
    """(bpp, PSNR) of codec ``name`` on the whole scene, each band group at the same setting;
    empty when the codec cannot take the scene's dtype or band groups."""
    from geocompress.evaluation import classical

    c, h, w = x.shape
    groups = band_groups(c)
    points = []
    settings = {"jpeg2000": [r / len(groups) for r in J2K_RATES], "jpegxl": JXL_PARAMS,
                "avif": AVIF_PARAMS, "bpg-hevc": HEVC_QP}[name]
    for s in settings:
        y, nbytes = np.empty_like(x), 0
        try:
            for g in groups:
                hwc = np.ascontiguousarray(x[g].transpose(1, 2, 0))
                data, dec = classical.roundtrip(name, hwc, s)
                y[g], nbytes = dec.reshape(h, w, len(g)).transpose(2, 0, 1), nbytes + len(data)
        except classical.UnsupportedInput:
            return []
        points.append((8 * nbytes / (h * w), scene_psnr(x, y, valid, bits)))
    return sorted(points)


def run_cli(args: list[str], env: dict) -> dict:
    """One ``geocompress`` call; its ``--json``-less stdout is ignored, errors are fatal."""
    p = subprocess.run(geocompress_cmd() + args, capture_output=True, text=True, env=env)
    if p.returncode:
        raise RuntimeError(f"geocompress {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    return p


def mgssnet_point(src: Path, tmp: Path, codec_args: list[str], x: np.ndarray, valid: np.ndarray,
                  env: dict) -> dict:
    """Compress and decompress ``src`` through the CLI with ``codec_args``: bpp, PSNR, walls."""
    store, out = tmp / "s.zarr", tmp / "s.tif"
    t0 = time.perf_counter()
    run_cli(["compress", str(src), str(store), "--overwrite", "--quiet", *codec_args], env)
    t1 = time.perf_counter()
    decode_args = [a for a in codec_args if a not in ("--quality",)]
    ck = [decode_args[i + 1] for i, a in enumerate(decode_args) if a == "--checkpoint"]
    run_cli(["decompress", str(store), str(out), "--overwrite", "--quiet",
             *(["--checkpoint", ck[0]] if ck else [])], env)
    t2 = time.perf_counter()
    info = json.loads(run_cli(["info", str(store), "--json"], env).stdout)
    with rasterio.open(out) as d:
        y = d.read()
    bits = int(info["bits"])
    point = {"bpp": float(info["bpp"]), "psnr": scene_psnr(x, y, valid, bits), "bits": bits,
             "halo": int(info.get("halo") or 0), "compress_s": round(t1 - t0, 1),
             "decompress_s": round(t2 - t1, 1)}
    subprocess.run(["rm", "-rf", str(store), str(out)], check=False)
    return point


def bd(anchor: list, test: list) -> float | None:
    """BD-rate (%) of ``test`` against ``anchor`` (lists of (bpp, PSNR)), None without overlap."""
    import warnings

    from geocompress.evaluation.bd import bd_rate, rd_front

    curves = []
    for pts in (anchor, test):
        a = np.array([p for p in pts if math.isfinite(p[1])], dtype=float)
        if len(a) < 2:
            return None
        keep = rd_front(a[:, 0], a[:, 1])
        curves.append(a[keep])
    if min(len(c) for c in curves) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = bd_rate(curves[0][:, 0], curves[0][:, 1], curves[1][:, 0], curves[1][:, 1])
    return None if math.isnan(v) else float(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", nargs="*", default=list(SCENES), help="scene names (default: all)")
    p.add_argument("--levels", type=float, nargs="*", default=None,
                   help="variable-rate levels (default: every integer level the weights have)")
    p.add_argument("--qualities", type=int, nargs="*", default=[1, 2, 3, 4])
    p.add_argument("--checkpoint", type=Path, default=VR_WEIGHTS)
    p.add_argument("--codecs", nargs="*", default=list(CLASSICAL))
    p.add_argument("--threads", type=int, default=1, help="threads of each geocompress call")
    p.add_argument("--out", type=Path, default=CATALOG / "scene_rd")
    p.add_argument("--reuse", action="store_true",
                   help="take the ladder's and the classical codecs' points from the last run's JSON "
                        "(they do not depend on the variable-rate weights): only the levels are coded; "
                        "scenes not named by --scenes keep their last figures")
    p.add_argument("--report", action="store_true",
                   help="only rewrite the .md and .png from the last run's JSON")
    p.add_argument("--reuse-classical", action="store_true",
                   help="take only the classical codecs' points from the last run's JSON (they do not "
                        "depend on geocompress): the ladder and the levels are coded again, e.g. after "
                        "a change of the codec's defaults")
    p.add_argument("--fresh", nargs="*", default=[],
                   help="with --reuse: scenes coded again in full (after a fix that changes them)")
    a = p.parse_args(argv)
    if a.report:
        doc = json.loads(a.out.with_suffix(".json").read_text())
        doc["mean_bd"] = summarize(doc["scenes"])
        a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
        write_report(doc, a.out.with_suffix(".md"))
        plot(doc, a.out.with_suffix(".png"))
        print(a.out.with_suffix(".md").read_text())
        return 0
    old = {}
    if (a.reuse or a.reuse_classical) and a.out.with_suffix(".json").exists():
        old = json.loads(a.out.with_suffix(".json").read_text())["scenes"]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    if a.levels is None:
        import torch

        cfg = torch.load(a.checkpoint, map_location="cpu", weights_only=True).get("config", {})
        a.levels = [float(q) for q in range(int(cfg.get("levels", 9)))]
    results = {}
    for name in a.scenes:
        src = data_dir() / SCENES[name]
        if not src.exists():
            print(f"skipped {name}: {src} not found", flush=True)
            continue
        x, valid = read_scene(src)
        r = {"path": SCENES[name], "shape": list(x.shape), "dtype": str(x.dtype), "ladder": [], "vr": []}
        kept = (old.get(name) if old.get(name, {}).get("path") == SCENES[name] and name not in a.fresh
                else None)
        classical_kept = kept
        if a.reuse_classical:
            kept = None
        if kept:
            r["ladder"] = kept["ladder"]
        with tempfile.TemporaryDirectory() as tmp:
            for q in [] if kept else a.qualities:
                r["ladder"].append({"quality": q, **mgssnet_point(src, Path(tmp), ["--quality", str(q)], x, valid, env)})
                print(name, "ladder", r["ladder"][-1], flush=True)
            for lv in a.levels:
                r["vr"].append({"level": lv, **mgssnet_point(
                    src, Path(tmp), ["--arch", "mgssnet-vr", "--checkpoint", str(a.checkpoint),
                                     "--quality", f"{lv:g}"], x, valid, env)})
                print(name, "vr", r["vr"][-1], flush=True)
        bits = r["vr"][0]["bits"] if r["vr"] else r["ladder"][0]["bits"]
        r["classical"] = ({c: [tuple(p) for p in v] for c, v in classical_kept["classical"].items()}
                          if classical_kept else {})
        for c in [] if classical_kept else a.codecs:
            t0 = time.perf_counter()
            r["classical"][c] = classical_curve(c, x, valid, bits)
            print(name, c, [(round(b, 3), round(q, 2)) for b, q in r["classical"][c]],
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        vr = [(v["bpp"], v["psnr"]) for v in r["vr"]]
        lad = [(v["bpp"], v["psnr"]) for v in r["ladder"]]
        r["bd"] = {"vr": {c: bd(pts, vr) for c, pts in r["classical"].items() if pts},
                   "ladder": {c: bd(pts, lad) for c, pts in r["classical"].items() if pts},
                   "vr_vs_ladder": bd(lad, vr)}
        results[name] = r
    if a.reuse or a.reuse_classical:  # the scenes not asked for this time keep their last figures
        results = {**{k: v for k, v in old.items() if k not in results and k in SCENES}, **results}
    summary = summarize(results)
    meta = {}
    if a.checkpoint.exists():
        import torch

        meta = torch.load(a.checkpoint, map_location="cpu", weights_only=True).get("meta", {})
    doc = {"cpu": cpu_label(), "threads": a.threads, "load": round(os.getloadavg()[0], 1), "vr_steps": meta.get("total_steps"), "checkpoint": str(a.checkpoint.relative_to(REPO))
           if a.checkpoint.is_relative_to(REPO) else str(a.checkpoint), "scenes": results, "mean_bd": summary}
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    write_report(doc, a.out.with_suffix(".md"))
    plot(doc, a.out.with_suffix(".png"))
    print(a.out.with_suffix(".md").read_text())
    lost = [c for c, v in summary["vr"].items() if v is not None and v > 0]
    if lost:
        print(f"MISS: the variable-rate model needs more bits than {', '.join(CLASSICAL[c] for c in lost)} "
              "(mean BD-rate over the scenes > 0)")
    return 1 if lost else 0


def summarize(results: dict) -> dict:
    """Mean BD-rate over the scenes where it is defined, per curve and classical codec."""
    out = {"median": {}}
    for curve in ("vr", "ladder"):
        out[curve], out["median"][curve] = {}, {}
        for c in CLASSICAL:
            vals = [r["bd"][curve].get(c) for r in results.values()]
            vals = [v for v in vals if v is not None]
            out[curve][c] = float(np.mean(vals)) if vals else None
            out["median"][curve][c] = float(np.median(vals)) if vals else None
    vals = [r["bd"]["vr_vs_ladder"] for r in results.values() if r["bd"]["vr_vs_ladder"] is not None]
    out["vr_vs_ladder"] = float(np.mean(vals)) if vals else None
    out["median"]["vr_vs_ladder"] = float(np.median(vals)) if vals else None
    return out


def _pct(v: float | None, median: float | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.1f} %" + ("" if median is None else f" ({median:+.1f} %)")


def write_report(doc: dict, path: Path) -> None:
    s = doc["mean_bd"]
    lines = ["# Whole scenes through the CLI against the classical codecs", "",
             f"`benchmarks/scene_rd.py` on {doc['cpu']}, {doc['threads']} thread(s) per call "
             f"(load average {doc.get('load', '?')} at the end: the seconds columns are wall "
             "times on a machine shared with other jobs); "
             f"variable-rate weights `{doc['checkpoint']}` ({doc.get('vr_steps')} steps in all). Every byte of the tile strings over the "
             "scene's pixels; PSNR over every band and the valid pixels, peak 2^bits - 1. "
             "BD-rate: negative = fewer bits than the classical codec at equal PSNR "
             "(n/a: the codec cannot take the scene, or the curves do not overlap). The CLI's "
             "defaults otherwise: halo auto, value ranges (`--value-range scene`, since session 22: "
             "[`../value_range.md`](../value_range.md); the session-21 run, before it, had the ladder "
             "at +83 % against JPEG 2000).", "",
             "## Mean (median) BD-rate over the scenes", "",
             "BD-rate is taken over each pair's shared PSNR range, so one scene whose curves barely "
             "overlap can dominate the mean: the median is beside it.", "",
             "| MGSSNet | " + " | ".join(CLASSICAL.values()) + " | vs the ladder |",
             "|---|" + "---|" * (len(CLASSICAL) + 1)]
    for curve, label in (("vr", "variable-rate (levels)"), ("ladder", "fixed-rate ladder q1-q4")):
        med = s.get("median", {})
        cells = " | ".join(_pct(s[curve][c], med.get(curve, {}).get(c)) for c in CLASSICAL)
        lines.append(f"| {label} | {cells} | "
                     f"{_pct(s['vr_vs_ladder'], med.get('vr_vs_ladder')) if curve == 'vr' else ''} |")
    lines += ["", "## By scene", "",
              "| scene | size | VR bpp range | VR PSNR range | " + " | ".join(f"VR vs {v}" for v in CLASSICAL.values())
              + " | ladder vs JPEG 2000 | VR vs ladder | compress / decompress s (VR, mid level) |",
              "|---|---|---|---|" + "---|" * (len(CLASSICAL) + 3)]
    for name, r in doc["scenes"].items():
        vr = r["vr"]
        mid = vr[len(vr) // 2] if vr else {}
        c, h, w = r["shape"]
        lines.append(
            f"| {name} | {w} x {h} x {c} {r['dtype']} | "
            f"{min(v['bpp'] for v in vr):.3f}-{max(v['bpp'] for v in vr):.3f} | "
            f"{min(v['psnr'] for v in vr):.2f}-{max(v['psnr'] for v in vr):.2f} | "
            + " | ".join(_pct(r["bd"]["vr"].get(k)) for k in CLASSICAL)
            + f" | {_pct(r['bd']['ladder'].get('jpeg2000'))} | {_pct(r['bd']['vr_vs_ladder'])} | "
            f"{mid.get('compress_s')} / {mid.get('decompress_s')} |")
    lines += ["", "## Points", ""]
    for name, r in doc["scenes"].items():
        lines.append(f"**{name}** (`{r['path']}`): variable-rate "
                     + ", ".join(f"L{v['level']:g} {v['bpp']:.3f}/{v['psnr']:.2f}" for v in r["vr"])
                     + "; ladder " + ", ".join(f"q{v['quality']} {v['bpp']:.3f}/{v['psnr']:.2f}"
                                               + (" (halo)" if v["halo"] else "") for v in r["ladder"])
                     + "; " + "; ".join(f"{CLASSICAL[k]} " + ", ".join(f"{b:.3f}/{q:.2f}" for b, q in pts)
                                        for k, pts in r["classical"].items() if pts) + " (bpp/dB)")
        lines.append("")
    lines.append("Plot: [`scene_rd.png`](scene_rd.png).")
    path.write_text("\n".join(lines) + "\n")


def plot(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(doc["scenes"])
    cols = min(3, len(names)) or 1
    rows = -(-len(names) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        r = doc["scenes"][name]
        for k, pts in r["classical"].items():
            if pts:
                v = np.array(pts)
                ax.plot(v[:, 0], v[:, 1], "o--", ms=3, lw=1, label=CLASSICAL[k])
        for key, style, label in (("ladder", "s:", "MGSSNet ladder q1-q4"), ("vr", "o-", "MGSSNet-VR")):
            v = np.array([(p["bpp"], p["psnr"]) for p in r[key]])
            if len(v):
                ax.plot(v[:, 0], v[:, 1], style, ms=4, lw=2 if key == "vr" else 1,
                        color="k" if key == "vr" else "tab:gray", label=label)
        ax.set_xscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("bpp (all bytes / scene pixels)")
        ax.set_ylabel("PSNR dB (valid pixels)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
