"""A small region read of a store against reading the whole scene, through xarray, in one run.

    .venv/bin/python benchmarks/region_read.py [--quality 3]

The 1024 x 1024 sample scene is compressed once; then a 64 x 64 window inside one tile is read
with ``xr.open_dataset(store, engine="geocompress")`` and ``.isel(...).values``, and the whole
scene likewise (synchronous scheduler, same process: the decode work, not Dask start-up). With one
tile per chunk the small read decodes 1 of the 16 tiles. Goal: the small read costs at most 1/8 of
the whole; exit 1 when missed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import dask
import xarray as xr

sys.path.insert(0, str(Path(__file__).parent))
from _common import sample_path  # noqa: E402

from geocompress.scene import compress_scene  # noqa: E402

GOAL = 1 / 8


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quality", type=int, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "sample.zarr"
        compress_scene(sample_path(), store, quality=args.quality, progress=False, processes=False)
        with dask.config.set(scheduler="synchronous"):
            arr = xr.open_dataset(store, engine="geocompress")["band_data"]
            arr.isel(x=slice(0, 8), y=slice(0, 8)).values  # warm-up: the model loads once
            small = timed(lambda: arr.isel(x=slice(300, 364), y=slice(300, 364)).values)
            whole = timed(lambda: arr.values)
    ratio = small / whole
    print(f"64 x 64 read {small:.3f} s, whole 1024 x 1024 scene {whole:.3f} s: ratio {ratio:.3f} "
          f"(goal <= {GOAL:.3f}): {'PASS' if ratio <= GOAL else 'FAIL'}")
    sys.exit(0 if ratio <= GOAL else 1)


if __name__ == "__main__":
    main()
