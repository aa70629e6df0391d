"""Recipe: compress every GeoTIFF in a folder, rebuild each, and check what users rely on.

For each scene: ``compress_scene`` -> ``decompress_scene`` -> compare CRS, transform, size, dtype,
band count and nodata with the source, and report bpp and PSNR over valid pixels. Writes a CSV.

    .venv/bin/python pipelines/compress_scenes.py [FOLDER] [--out out/scenes] [--quality Q]
        [--arch A --untrained]   # untrained weights: exercises the pipeline, not the codec
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from distributed import Client, LocalCluster

from geocompress import metrics
from geocompress.scene import compress_scene, decompress_scene, store_info


def scenes_in(folder: Path) -> list[Path | list[Path]]:
    out: list[Path | list[Path]] = sorted(folder.glob("*.tif"))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        bands = sorted(sub.glob("*.tif"), reverse=True)  # e.g. Landsat B4, B3, B2 -> RGB
        if bands:
            out.append(bands)
    return out


def check(scene: Path | list[Path], out: Path, kw: dict) -> dict:
    paths = scene if isinstance(scene, list) else [scene]
    name = paths[0].parent.name if isinstance(scene, list) else paths[0].stem
    t = time.perf_counter()
    r = compress_scene(scene, out / f"{name}.zarr", overwrite=True, progress=False, **kw)
    tif = decompress_scene(out / f"{name}.zarr", out / f"{name}.tif", progress=False, overwrite=True,
                           scheduler=kw.get("scheduler"))
    with rasterio.open(paths[0]) as a, rasterio.open(tif) as b:
        count = sum(rasterio.open(p).count for p in paths)
        geo = (a.crs == b.crs and a.transform == b.transform and a.shape == b.shape
               and b.count == count and a.dtypes[0] == b.dtypes[0] and a.nodata == b.nodata)
        x = np.concatenate([rasterio.open(p).read() for p in paths])
        valid = np.ones(a.shape, bool)
        for p in paths:
            with rasterio.open(p) as d:
                valid &= d.dataset_mask() > 0
        y = b.read()
    info = store_info(out / f"{name}.zarr")
    peak = 2 ** r.bits - 1
    return {"scene": name, "size": f"{x.shape[2]}x{x.shape[1]}", "bands": x.shape[0],
            "dtype": str(x.dtype), "bits": r.bits, "tiles": r.tiles, "written": r.written,
            "dropped": r.dropped_nodata + r.dropped_constant,
            "bpp": round(8 * info["tile_bytes"] / max(int(valid.sum()), 1), 4),
            "psnr_db": round(metrics.psnr(x[:, valid][:, None], y[:, valid][:, None], peak=peak), 2),
            "georef_ok": geo, "seconds": round(time.perf_counter() - t, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = Path(os.environ.get("GEOCOMPRESS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("folder", nargs="?", default=data / "scenes", type=Path)
    ap.add_argument("--out", default="out/scenes", type=Path)
    ap.add_argument("--arch", default="mgssnet")
    ap.add_argument("--quality", type=int)
    ap.add_argument("--untrained", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    kw: dict = {"arch": args.arch, "quality": args.quality}
    if args.untrained:
        kw.update(pretrained=False, model_config={"N": 16, "M": 24})
    rows = []
    # one cluster for the whole folder: workers load the model once, not once per scene
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster):
        kw.update(scheduler=cluster.scheduler_address,
                  torch_threads=max(1, (os.cpu_count() or 1) // args.workers))
        for scene in scenes_in(args.folder):
            try:
                rows.append(check(scene, args.out, kw))
            except Exception as e:  # noqa: BLE001 - report every scene, then fail
                rows.append({"scene": str(scene), "error": f"{type(e).__name__}: {e}"})
            print(rows[-1], flush=True)
    with open(args.out / "scenes.csv", "w", newline="") as f:
        keys = sorted({k for r in rows for k in r})
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    bad = [r for r in rows if "error" in r or not r.get("georef_ok")]
    print(f"{len(rows) - len(bad)} / {len(rows)} scenes round-tripped with georeferencing intact")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
