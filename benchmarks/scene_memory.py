"""Peak memory compressing a 17408 x 17408 scene against a 2048 x 2048 one (goal: ratio < 1.3).

Both scenes are VRT mosaics of the 1024 x 1024 sample scene (``_common.mosaic_vrt``): 289 and 4
repetitions. Each size runs in its own process (peak RSS = ``ru_maxrss``), with an in-process
Dask LocalCluster (threads) so that the figure covers reader, graph, codec and store together.
The model is a small untrained factorized codec: memory does not depend on training, and a
4624-tile scene then takes minutes, not hours, on 2 cores.

    .venv/bin/python benchmarks/scene_memory.py [--sizes 2048 17408]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from geocompress.scene import compress_scene
t = time.perf_counter()
r = compress_scene(sys.argv[1], sys.argv[2], arch="bmshj2018-factorized", pretrained=False,
                   model_config={"N": 16, "M": 24}, processes=False, progress=False, batch_size=16)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "tiles": r.tiles, "seconds": time.perf_counter() - t, "bytes": r.tile_bytes}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs=2, default=[2048, 17408])
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import mosaic_vrt

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            vrt = mosaic_vrt(Path(tmp) / f"mosaic_{size}.vrt", size)
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, str(vrt), str(Path(tmp) / f"{size}.zarr")],
                                 check=True, capture_output=True, text=True)
            rows[size] = json.loads(out.stdout.strip().splitlines()[-1])
            rows[size]["wall"] = time.perf_counter() - t
    small, large = args.sizes
    print(f"{'scene':>14}{'tiles':>8}{'peak RSS MB':>13}{'seconds':>10}")
    for size, r in rows.items():
        print(f"{f'{size} x {size}':>14}{r['tiles']:>8}{r['peak_rss_mb']:>13.0f}{r['seconds']:>10.1f}")
    ratio = rows[large]["peak_rss_mb"] / rows[small]["peak_rss_mb"]
    print(f"peak memory ratio {large} / {small}: {ratio:.3f} (goal < 1.3): {'PASS' if ratio < 1.3 else 'FAIL'}")
    sys.exit(0 if ratio < 1.3 else 1)


if __name__ == "__main__":
    main()
