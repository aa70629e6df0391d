"""GPU throughput of the tile codec (prepared for a lent H200; run as one script).

Reports tiles/s and megapixels/s for encode and decode at several batch sizes, the share of wall
time the GPU is busy (mean of NVML utilisation samples taken every 50 ms; needs pynvml), and
checks the cross-device promise: strings encoded on the GPU decode on the CPU to the same pixels as on the GPU.

    python benchmarks/gpu_codec.py [--tiles 256] [--batches 16 32 64] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import json
import threading
import sys
import time

from pathlib import Path

import numpy as np
import torch

import geocompress
from geocompress.codec import WeightsError



class Utilisation:
    """Samples NVML GPU utilisation in a thread while a block runs."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - optional
            self._nvml = None

    def __enter__(self) -> "Utilisation":
        if self._nvml:
            def loop() -> None:
                while not self._stop.is_set():
                    self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu)
                    time.sleep(0.05)
            self._t = threading.Thread(target=loop, daemon=True)
            self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def load(device: str, batch: int, checkpoint: str | None, precision: str):
    kw = {"device": device, "batch_size": batch, "precision": precision}
    if checkpoint:
        return geocompress.load_codec(checkpoint=checkpoint, **kw)
    try:
        return geocompress.load_codec(**kw)
    except WeightsError:
        return geocompress.load_codec(pretrained=False, N=64, M=96, **kw)


def tiles(n: int) -> np.ndarray:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import synthetic_tiles

    return synthetic_tiles(n, noise=12, vary=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=256)
    ap.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--checkpoint")
    ap.add_argument("--precision", default="auto",
                    choices=["auto", "bfloat16", "float16", "float32", "float64"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    x = tiles(args.tiles)
    mp = args.tiles * 256 * 256 / 1e6
    results = []
    for batch in args.batches:
        codec = load("cuda", batch, args.checkpoint, args.precision)
        codec.encode(x[:batch])
        torch.cuda.synchronize()
        row = {"batch": batch, "precision": args.precision}
        for name, fn in (("encode", lambda: codec.encode(x)), ("decode", None)):
            if name == "decode":
                fn = lambda: codec.decode(strings)  # noqa: E731
            with Utilisation() as util:
                t = time.perf_counter()
                out = fn()
                torch.cuda.synchronize()
                wall = time.perf_counter() - t
            if name == "encode":
                strings = out
            row[f"{name}_tiles_s"] = args.tiles / wall
            row[f"{name}_mpx_s"] = mp / wall
            row[f"{name}_nvml_util_pct"] = util.mean
        results.append(row)
    # cross-device: GPU-encoded strings decode identically on CPU
    gpu = load("cuda", 16, args.checkpoint, args.precision)
    cpu = load("cpu", 16, args.checkpoint, args.precision)
    s = gpu.encode(x[:8])
    same = all(np.array_equal(a, b) for a, b in zip(gpu.decode(s), cpu.decode(s)))
    print(json.dumps({"device": torch.cuda.get_device_name(0), "results": results,
                      "gpu_encoded_cpu_decoded_identical": same}, indent=2))


if __name__ == "__main__":
    main()
