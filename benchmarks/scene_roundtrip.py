"""The paper's scene size end to end: a 17408 x 17408 scene compressed *and* decompressed with the
shipped MGSSNet weights on this machine's LocalCluster, against the targets of issue 23.

    .venv/bin/python benchmarks/scene_roundtrip.py [--size 17408] [--quality 3] [--workers N]

The scene is a VRT mosaic of the 1024 x 1024 sample scene (``_common.mosaic_vrt``: 289 repetitions,
4,624 tiles; a real raster read by window, no large file on disk). Compress writes a Zarr store;
decompress writes the whole scene back as a cloud-optimized GeoTIFF. Printed for each direction:
wall seconds, tiles per second, and the peak resident memory of the whole process tree (client
plus worker processes, sampled every 0.2 s). Target: under 10 minutes each way; exit code 1 when
missed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import mosaic_vrt  # noqa: E402

from geocompress.scene import compress_scene, decompress_scene  # noqa: E402

TARGET_S = 600.0


class PeakRSS:
    """Peak summed RSS of this process and its children, sampled in a thread."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=17408)
    ap.add_argument("--quality", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        tmp = Path(tmp)
        vrt = mosaic_vrt(tmp / "mosaic.vrt", args.size)
        rows = {}
        with PeakRSS() as mem:
            t = time.perf_counter()
            r = compress_scene(vrt, tmp / "scene.zarr", quality=args.quality, workers=args.workers)
            rows["compress"] = {"seconds": time.perf_counter() - t, "tiles": r.tiles}
        rows["compress"]["peak_rss_mb"] = mem.peak / 2 ** 20
        rows["compress"]["bpp"] = 8 * r.tile_bytes / (args.size * args.size)
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = decompress_scene(tmp / "scene.zarr", tmp / "scene.tif", workers=args.workers)
            rows["decompress"] = {"seconds": time.perf_counter() - t, "tiles": r.tiles}
        rows["decompress"]["peak_rss_mb"] = mem.peak / 2 ** 20
        rows["decompress"]["output_mb"] = out.stat().st_size / 2 ** 20
    print(f"\n{args.size} x {args.size} scene ({r.tiles} tiles of 256 x 256), shipped MGSSNet, "
          f"{psutil.cpu_count()} cores")
    print(f"{'direction':<12}{'wall s':>9}{'tiles/s':>9}{'peak RSS MB':>13}   target")
    ok = True
    for name, row in rows.items():
        hit = row["seconds"] <= TARGET_S
        ok &= hit
        verdict = "PASS" if hit else f"MISS by {row['seconds'] / TARGET_S:.2f}x"
        print(f"{name:<12}{row['seconds']:>9.1f}{row['tiles'] / row['seconds']:>9.2f}"
              f"{row['peak_rss_mb']:>13.0f}   <= {TARGET_S:.0f} s: {verdict}")
    print(f"store {rows['compress']['bpp']:.3f} bpp; GeoTIFF (COG, DEFLATE) "
          f"{rows['decompress']['output_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "rows": rows}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
