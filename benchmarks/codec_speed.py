"""Parameter count and CPU encode / decode time per 256 x 256 tile: MGSSNet beside CompressAI's
Cheng2020 (attention) and Minnen joint (mbt2018), measured in one run on the same tiles.

    .venv/bin/python benchmarks/codec_speed.py [--tiles 4] [--threads 2] [--precision float64]

Untrained (fixed-seed) weights: speed does not depend on training, but bytes do, so the bpp column
is only a sanity check. Times are wall-clock per tile, best of ``--repeat`` runs, batch = all tiles.
"""

from __future__ import annotations

import argparse
import sys
import time

from pathlib import Path

import numpy as np
import torch

import geocompress

MODELS = [("mgssnet", {"N": 128, "M": 192}), ("cheng2020-attn", {"N": 128}),
          ("mbt2018", {"N": 128, "M": 192})]


def tiles(n: int) -> np.ndarray:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import synthetic_tiles

    return synthetic_tiles(n, noise=12, vary=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=4)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--precision", default="float64", choices=["float64", "float32"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = tiles(args.tiles)
    rows = []
    for arch, cfg in MODELS:
        codec = geocompress.load_codec(arch, pretrained=False, precision=args.precision,
                                       batch_size=args.tiles, **cfg)
        params = sum(p.numel() for p in codec.model.parameters())
        enc, dec = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            s = codec.encode(x)
            enc.append((time.perf_counter() - t) / len(x))
            t = time.perf_counter()
            out = codec.decode(s)
            dec.append((time.perf_counter() - t) / len(x))
        assert all(o.shape == t.shape for o, t in zip(out, x))
        bpp = 8 * sum(map(len, s)) / (len(x) * 256 * 256)
        rows.append((arch, params, min(enc), min(dec), bpp))
    ref = {r[0]: r for r in rows}["mbt2018"]
    print(f"CPU, {args.threads} threads, {args.tiles} tiles of 256x256, precision {args.precision}")
    print(f"{'model':<16}{'params (M)':>11}{'encode s/tile':>15}{'decode s/tile':>15}"
          f"{'enc x mbt2018':>15}{'dec x mbt2018':>15}{'bpp*':>7}")
    for arch, params, e, d, bpp in rows:
        print(f"{arch:<16}{params / 1e6:>11.2f}{e:>15.3f}{d:>15.3f}{e / ref[2]:>15.2f}"
              f"{d / ref[3]:>15.2f}{bpp:>7.2f}")
    print("* untrained weights: bpp is not a rate-distortion result")


if __name__ == "__main__":
    main()
