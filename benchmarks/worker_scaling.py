"""1 against 2 worker processes on a CPU LocalCluster, same scene, one run (ratio of throughputs).

Each configuration gets a fresh LocalCluster; a warm-up scene loads the model in every worker
first, then the timed scene is compressed. Torch threads are split between worker processes
(2 cores: 1 worker x 2 threads vs 2 workers x 1 thread), so the ratio shows what process-level
parallelism adds over torch's own intra-op threads on the same cores.

    .venv/bin/python benchmarks/worker_scaling.py [--size 2048] [--untrained]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

import geocompress
from geocompress.codec import WeightsError
from geocompress.scene import compress_scene
from geocompress.scene.cluster import default_torch_threads


def run(workers: int, scene: Path, small: Path, tmp: Path, kw: dict) -> tuple[float, int]:
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        threads = default_torch_threads(workers)
        client.run(lambda: __import__("torch").set_num_threads(threads))
        compress_scene(small, tmp / f"warm{workers}.zarr", scheduler=cluster.scheduler_address,
                       progress=False, shard=1, **kw)  # one task per tile: every worker warms up
        t = time.perf_counter()
        r = compress_scene(scene, tmp / f"timed{workers}.zarr", scheduler=cluster.scheduler_address,
                           progress=False, shard=2, **kw)
        return time.perf_counter() - t, r.written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--untrained", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import mosaic_vrt

    kw: dict = {}
    try:
        if args.untrained:
            raise WeightsError("untrained requested")
        geocompress.load_codec()
    except WeightsError:
        kw = {"pretrained": False, "model_config": {"N": 64, "M": 96}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        scene = mosaic_vrt(tmp / "scene.vrt", args.size)
        small = mosaic_vrt(tmp / "small.vrt", 512)
        res = {w: run(w, scene, small, tmp, kw) for w in (1, 2)}
    print(f"scene {args.size} x {args.size} ({res[1][1]} tiles), CPU LocalCluster")
    for w, (sec, n) in res.items():
        print(f"{w} worker(s) x {default_torch_threads(w)} torch thread(s): {sec:8.1f} s  "
              f"{n / sec:.2f} tiles/s")
    print(f"scaling ratio 2 workers / 1 worker (throughput): {res[1][0] / res[2][0]:.2f}")


if __name__ == "__main__":
    main()
