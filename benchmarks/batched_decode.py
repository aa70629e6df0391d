"""Batched lockstep autoregressive decoding against CompressAI's per-tile loop, one run.

Same model (Minnen joint, ``mbt2018``, N=128, M=192, fixed-seed weights), same 256 x 256 tiles:

* CompressAI: ``model.compress`` / ``model.decompress`` one tile at a time (its reference loop:
  one masked-conv + entropy-parameter evaluation and one rANS call per latent position per tile,
  the full CDF table marshalled on every call);
* geocompress: ``TileCodec.decode`` of the whole batch: one pass over the latent positions for all
  tiles, the context model and entropy parameters evaluated batched and exactly, one rANS stream
  per tile, only the CDF rows a position uses marshalled.

Reported: latent decoding time (z, hyper decoder, the autoregressive loop over positions: the
part this benchmark is about) and end-to-end time including the synthesis transform ``g_s``
(identical work in both decoders), at float32 (CompressAI's precision) and geocompress's default
float64. Goal: at least 10x on the autoregressive decoding of a batch of 64 tiles on CPU.

    .venv/bin/python benchmarks/batched_decode.py [--tiles 64]
"""

from __future__ import annotations

import argparse
import sys
import time

from pathlib import Path

import numpy as np
import torch

from geocompress.codec import TileCodec, untrained
from geocompress.codec.format import unpack


def tiles(n: int) -> np.ndarray:
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import synthetic_tiles

    return synthetic_tiles(n, noise=10, vary=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=64)
    ap.add_argument("--reference-tiles", type=int, default=8,
                    help="tiles CompressAI's per-tile loop is timed on; its time is linear in the "
                         "tile count and is scaled to --tiles (default 8)")
    args = ap.parse_args()
    x = tiles(args.tiles)
    model = untrained("mbt2018", N=128, M=192).eval()

    # CompressAI's reference: per tile, its own decompress split into its two parts
    xt = torch.from_numpy(x).float() / 255
    with torch.no_grad():
        n_ref = min(args.reference_tiles, len(x))
        comp = [model.compress(xt[i:i + 1]) for i in range(n_ref)]
        lat = syn = 0.0
        for c in comp:  # = model.decompress(c["strings"], c["shape"]), timed in two parts
            t = time.perf_counter()
            z_hat = model.entropy_bottleneck.decompress(c["strings"][1], c["shape"])
            params = model.h_s(z_hat)
            y_hat = torch.zeros((1, model.M, 16 + 4, 16 + 4))
            model._decompress_ar(c["strings"][0][0], y_hat, params, 16, 16, 5, 2)
            y_hat = torch.nn.functional.pad(y_hat, (-2, -2, -2, -2))
            t1 = time.perf_counter()
            model.g_s(y_hat).clamp_(0, 1)
            lat, syn = lat + t1 - t, syn + time.perf_counter() - t1
        ref_latent = lat / n_ref * len(x)
        ref_total = (lat + syn) / n_ref * len(x)

    rows = [("compressai per-tile (float32)*", ref_latent, ref_total)]
    for precision in ("float32", "float64"):
        codec = TileCodec(untrained("mbt2018", N=128, M=192), precision=precision,
                          batch_size=len(x))
        strings = codec.encode(x)
        t = time.perf_counter()
        out = codec.decode(strings)
        total = time.perf_counter() - t
        streams = [unpack(s).groups[0] for s in strings]
        t = time.perf_counter()
        codec.coder.decode(streams, (16, 16))
        latent = time.perf_counter() - t
        single = codec.decode(strings[:1])[0]
        assert np.array_equal(single, out[0]), "batched decode must equal single-tile decode"
        rows.append((f"geocompress batched ({precision})", latent, total))
    print(f"{len(x)} tiles of 256 x 256, mbt2018 N=128 M=192, CPU threads {torch.get_num_threads()}")
    print(f"{'decoder':<34}{'latent s':>10}{'total s':>10}{'latent x':>10}{'total x':>10}")
    for name, lat, tot in rows:
        print(f"{name:<34}{lat:>10.2f}{tot:>10.2f}{ref_latent / lat:>10.1f}{ref_total / tot:>10.1f}")
    print(f"* measured on {n_ref} tiles, scaled to {len(x)} (the per-tile loop is linear)")
    best = max(ref_latent / r[1] for r in rows[1:])
    print(f"autoregressive (latent) decoding speedup at batch {len(x)}: {best:.1f}x "
          f"(goal >= 10x): {'PASS' if best >= 10 else 'FAIL'}; end-to-end also includes the "
          f"synthesis transform, the same work in both")
    sys.exit(0 if best >= 10 else 1)


if __name__ == "__main__":
    main()
