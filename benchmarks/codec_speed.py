"""Per-tile encode / decode time of the shipped MGSSNet in every precision, on 1 and 2 cores, beside
JPEG 2000 (OpenJPEG) on the same tiles at the same bytes, in one run.

    .venv/bin/python benchmarks/codec_speed.py [--quality 3] [--tiles 16] [--threads 1 2]

Tiles: the 256 x 256 tiles of the 1024 x 1024 sample scene. For each thread count and precision:
wall seconds per tile (best of ``--repeat``, in batches of ``--batch``), core-seconds per tile (wall x
threads), bpp, PSNR against the source, and the decode split into its autoregressive entropy part
and the synthesis transform; the same entropy part in raster order (format 1, before the
wavefront) shows what the wavefront changed. Targets (issue 23), checked for the default mode
(``auto``): <= 0.1 core-s per tile to encode and to decode, decode within 30x of JPEG 2000's
(1 thread each). A missed target is printed with its margin and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import sample_tiles  # noqa: E402

import geocompress  # noqa: E402
from geocompress.codec.precision import ONNX, onnx_available, resolve_precision  # noqa: E402
from geocompress.evaluation.classical import jpeg2000_decode, jpeg2000_encode  # noqa: E402
from geocompress.metrics import psnr  # noqa: E402

ENCODE_TARGET, DECODE_TARGET, J2K_RATIO_TARGET = 0.1, 0.1, 30.0


def best(f, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def measure(codec, tiles: np.ndarray, repeat: int) -> dict:
    n = len(tiles)
    codec.encode(tiles[:2])  # warm-up: oneDNN builds its kernels on first use of a shape
    codec.decode(codec.encode(tiles[:2]))
    t_enc, strings = best(lambda: codec.encode(tiles), repeat)
    t_dec, out = best(lambda: codec.decode(strings), repeat)
    # the decode's parts: entropy (hyper decoder + autoregressive loop) and synthesis
    x = torch.from_numpy(tiles[:codec.batch_size].astype(np.float64) / 255)
    y = codec.transforms(codec.model.g_a, x)
    m = len(x)
    parts = {}
    for order in ("wavefront", "raster"):
        streams, _ = codec.coder.encode(y, order=order)
        parts[order], y_hat = best(lambda: codec.coder.decode(streams, y.shape[-2:], order=order),
                                   repeat)
    parts["g_s"], _ = best(lambda: codec.transforms(codec.model.g_s, y_hat), repeat)
    return {"encode_s": t_enc / n, "decode_s": t_dec / n,
            "bpp": 8 * sum(map(len, strings)) / (n * tiles.shape[-1] * tiles.shape[-2]),
            "psnr": float(np.mean([psnr(a, b, 255) for a, b in zip(tiles, out)])),
            "entropy_decode_s": parts["wavefront"] / m, "entropy_decode_raster_s": parts["raster"] / m,
            "synthesis_s": parts["g_s"] / m, "per_tile_bpp": [8 * len(s) / tiles[0, 0].size for s in strings]}


def jpeg2000(tiles: np.ndarray, bpps: list[float], repeat: int) -> dict:
    hwc = [np.ascontiguousarray(t.transpose(1, 2, 0)) for t in tiles]
    t_enc, data = best(lambda: [jpeg2000_encode(a, b) for a, b in zip(hwc, bpps)], repeat)
    t_dec, out = best(lambda: [jpeg2000_decode(d) for d in data], repeat)
    return {"encode_s": t_enc / len(tiles), "decode_s": t_dec / len(tiles),
            "bpp": float(np.mean([8 * len(d) / a[..., 0].size for d, a in zip(data, hwc)])),
            "psnr": float(np.mean([psnr(a, b, 255) for a, b in zip(hwc, out)]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--precisions", nargs="+", default=["bfloat16", "float32", "float64"] + ([ONNX] if onnx_available() else []))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="codec batch size (the pipeline's default)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    tiles = sample_tiles(args.tiles)
    default = resolve_precision("auto", "cpu")
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for precision in args.precisions:
            codec = geocompress.load_codec("mgssnet", quality=args.quality, precision=precision,
                                           batch_size=args.batch)
            rows.append({"threads": threads, "precision": precision, **measure(codec, tiles, args.repeat)})
            r = rows[-1]
            print(f"  measured {threads} thread(s) {precision}: encode {r['encode_s']:.3f} s, "
                  f"decode {r['decode_s']:.3f} s per tile", flush=True)
    torch.set_num_threads(1)
    ref = next(r for r in rows if r["threads"] == 1 and r["precision"] == args.precisions[0])
    j2k = jpeg2000(tiles, ref["per_tile_bpp"], args.repeat)

    print(f"\nMGSSNet q{args.quality}, {len(tiles)} tiles of 256 x 256 (sample scene); default "
          f"precision on this machine: {default}")
    print(f"{'threads':>7} {'precision':<10}{'enc s/tile':>11}{'dec s/tile':>11}{'enc core-s':>11}"
          f"{'dec core-s':>11}{'dec x J2K':>10}{'entropy':>9}{'raster':>8}{'g_s':>7}{'bpp':>7}{'PSNR':>7}")
    for r in rows:
        t = r["threads"]
        print(f"{t:>7} {r['precision']:<10}{r['encode_s']:>11.3f}{r['decode_s']:>11.3f}"
              f"{r['encode_s'] * t:>11.3f}{r['decode_s'] * t:>11.3f}{r['decode_s'] / j2k['decode_s']:>10.1f}"
              f"{r['entropy_decode_s']:>9.3f}{r['entropy_decode_raster_s']:>8.3f}{r['synthesis_s']:>7.3f}"
              f"{r['bpp']:>7.3f}{r['psnr']:>7.2f}")
    print(f"{1:>7} {'JPEG 2000':<10}{j2k['encode_s']:>11.3f}{j2k['decode_s']:>11.3f}"
          f"{j2k['encode_s']:>11.3f}{j2k['decode_s']:>11.3f}{1.0:>10.1f}{'':>24}"
          f"{j2k['bpp']:>7.3f}{j2k['psnr']:>7.2f}")
    print("entropy: hyper decoder + autoregressive loop of the decode, wavefront order (format 2); "
          "raster: the same in raster order (format 1)")

    ok = True
    if default in args.precisions and 1 in args.threads:
        d = next(r for r in rows if r["threads"] == 1 and r["precision"] == default)
        checks = [("encode core-s per tile", d["encode_s"], ENCODE_TARGET),
                  ("decode core-s per tile", d["decode_s"], DECODE_TARGET),
                  ("decode time / JPEG 2000's", d["decode_s"] / j2k["decode_s"], J2K_RATIO_TARGET)]
        for name, value, target in checks:
            hit = value <= target
            ok &= hit
            print(f"{name} ({default}, 1 thread): {value:.3f} (target <= {target:g}): "
                  + ("PASS" if hit else f"MISS by {value / target:.2f}x"))
        print(f"AR share of the decode ({default}, 1 thread): "
              f"{d['entropy_decode_s'] / d['decode_s']:.0%} (wavefront) against "
              f"{d['entropy_decode_raster_s'] / (d['decode_s'] - d['entropy_decode_s'] + d['entropy_decode_raster_s']):.0%}"
              f" in raster order; wavefront speed-up of the entropy part "
              f"{d['entropy_decode_raster_s'] / d['entropy_decode_s']:.1f}x")
    if args.json:
        for r in rows:
            r.pop("per_tile_bpp")
        args.json.write_text(json.dumps({"quality": args.quality, "tiles": len(tiles),
                                         "default": default, "rows": rows, "jpeg2000": j2k}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
