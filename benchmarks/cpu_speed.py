"""Per-tile encode and decode on one CPU core in the default mode, with the CPU's class and the
fraction of its peak the transforms reach (issue 38).

    .venv/bin/python benchmarks/cpu_speed.py [--emulate-avx2] [--quality 3] [--tiles 16] [--repeat 9]

Tiles: the 256 x 256 tiles of the 1024 x 1024 sample scene, coded by the shipped MGSSNet in
``precision="auto"`` (what a user gets), batches of ``--batch``, ``torch.set_num_threads(1)``.
Encode and decode are timed ``--repeat`` times, interleaved; the figures are medians of the
process's CPU time per tile (on a machine shared with other work, wall time counts the time the
process waited for a core; it is printed too), and the transforms ``g_a`` / ``g_s`` are timed alone
to give their GFLOP/s against the peak of the CPU's class:

    class    mode the transforms run in     FLOP per cycle per core assumed
    AMX      bfloat16 (AMX-BF16 tiles)      1024  (TMUL: 16 x 32 bf16 x 16 per 16 cycles, x 2)
    AVX-512  bfloat16 (AVX512-BF16)          128  (2 x VDPBF16PS of 32 pairs)
    AVX-512  float32                          64  (2 x 512-bit FMA)
    AVX2     float32                          32  (2 x 256-bit FMA)

times the clock /proc/cpuinfo reports (``--ghz`` to give another): that is the nominal clock,
and a core boosting above it can reach more than "100 %" of it.

``--emulate-avx2`` runs the same on an AVX2-only CPU's code paths: it re-executes itself with
``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's kernels), ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's
convolutions) and ``GEOCOMPRESS_CPU_CLASS=avx2`` (so that ``auto`` resolves as it does there),
set before torch is imported, and with ``benchmarks/avx2_cpuid.c`` (compiled with ``cc`` on
first use) preloaded: it makes the process's CPUID report no AVX-512 / AVX-VNNI / bf16 / AMX, which
is the only way to make ONNX Runtime (``float32-onnx``, what ``auto`` picks there when it is
installed) use its AVX2 kernels. Where the CPU has no CPUID faulting the run says so: PyTorch is
still capped, ONNX Runtime is not. Goal on AVX2 (issue 38): <= 0.15 s per tile each way; a miss
exits 1. ``read`` is what a store's readers (``decompress``, the lazy view) decode with in
``auto`` on CPU where ONNX Runtime is installed: the torch-free NumPy decoder
(:mod:`geocompress.codec.numpy_decoder`), whatever the CPU class. Figures and the other options
measured: ``catalogs/cpu_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

EMULATE_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                "GEOCOMPRESS_CPU_CLASS": "avx2"}
AVX2_GOAL_S = 0.15
FLOP_PER_CYCLE = {("AMX", "bfloat16"): 1024, ("AVX-512", "bfloat16"): 128,
                  ("AVX-512", "float32"): 64, ("AVX2", "float32"): 32}
MASK_SOURCE = Path(__file__).with_name("avx2_cpuid.c")


def emulating() -> bool:
    return all(os.environ.get(k) == v for k, v in EMULATE_AVX2.items())


def cpuid_mask() -> Path | None:
    """The compiled CPUID mask (module docstring), built once into the geocompress cache."""
    root = os.environ.get("GEOCOMPRESS_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geocompress"
    lib = Path(root) / "kernels" / "avx2_cpuid.so"
    if lib.exists() and lib.stat().st_mtime >= MASK_SOURCE.stat().st_mtime:
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", str(lib),
                        str(MASK_SOURCE)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"no CPUID mask ({e}): ONNX Runtime will not be capped to AVX2", file=sys.stderr)
        return None
    return lib


def cpu_model_and_ghz() -> tuple[str, float | None]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU", None
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), "unknown CPU")
    mhz = [float(ln.split(":", 1)[1]) for ln in text.splitlines() if ln.startswith("cpu MHz")]
    return model, (max(mhz) / 1000 if mhz else None)


def store_reader(codec, batch: int):
    """The torch-free NumPy decoder of ``codec``'s weights (its bundle written to a temporary
    cache), or None without ONNX Runtime."""
    import tempfile

    from geocompress.codec.numpy_decoder import NumpyDecoder, runtime_available

    if not runtime_available():
        return None
    from geocompress.codec.decoder_bundle import write_bundle

    os.environ["GEOCOMPRESS_CACHE"] = tempfile.mkdtemp(prefix="gc-cpu-speed-")
    return NumpyDecoder(write_bundle(codec), batch_size=batch, threads=1)  # one core, as the rest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="re-run on an AVX2-only CPU's code paths (module docstring)")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8, help="codec batch size (the pipeline's default)")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--ghz", type=float, help="the core's clock for the peak (default: cpuinfo's, "
                    "nominal: a core that boosts above it can show more than 100 %%)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()
    if args.emulate_avx2 and not emulating():  # the variables must be set before torch loads
        env = {**os.environ, **EMULATE_AVX2}
        lib = cpuid_mask()
        if lib is not None:
            env["LD_PRELOAD"] = " ".join(filter(None, [str(lib), env.get("LD_PRELOAD")]))
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    sys.path.insert(0, str(Path(__file__).parent))
    from _common import sample_tiles

    import geocompress
    from geocompress.codec.precision import cpu_class

    torch.set_num_threads(1)
    tiles = sample_tiles(args.tiles)
    codec = geocompress.load_codec("mgssnet", quality=args.quality, precision="auto",
                                   batch_size=args.batch)
    mode, klass = codec.precision, cpu_class()
    model_name, ghz = cpu_model_and_ghz()
    ghz = args.ghz or ghz
    n = len(tiles)

    x = torch.from_numpy(tiles[:args.batch].astype(np.float64) / 255)
    y = codec.transforms(codec.model.g_a, x)
    _, y_hat = codec.coder.encode(y)
    flops = {}
    for name, module, inp in (("g_a", codec.model.g_a, x[:1]), ("g_s", codec.model.g_s, y_hat[:1])):
        counter = FlopCounterMode(display=False)  # the network's work, whatever runs it
        with torch.no_grad(), counter:
            module(inp.to(codec.dtype))
        flops[name] = counter.get_total_flops() / 1e9

    codec.decode(codec.encode(tiles[:2]))  # warm-up: oneDNN builds its kernels on first use
    strings = codec.encode(tiles)
    jobs = {"encode": lambda: codec.encode(tiles), "decode": lambda: codec.decode(strings),
            "g_a": lambda: codec.transforms(codec.model.g_a, x),
            "g_s": lambda: codec.transforms(codec.model.g_s, y_hat)}
    per = {"encode": n, "decode": n, "g_a": len(x), "g_s": len(x)}
    reader = store_reader(codec, args.batch)
    if reader is not None:  # what decompress and the lazy view decode with (auto, CPU)
        reader.decode(strings[:2])
        jobs["read"] = lambda: reader.decode(strings)
        per["read"] = n
    cpu_s = {k: [] for k in jobs}
    wall_s = {k: [] for k in jobs}
    for _ in range(args.repeat):
        for k, f in jobs.items():
            c, w = time.process_time(), time.perf_counter()
            f()
            cpu_s[k].append((time.process_time() - c) / per[k])
            wall_s[k].append((time.perf_counter() - w) / per[k])
    med = {k: statistics.median(v) for k, v in cpu_s.items()}
    wmed = {k: statistics.median(v) for k, v in wall_s.items()}

    fpc = FLOP_PER_CYCLE.get((klass, "float32" if mode == "float32-onnx" else mode))
    peak = fpc * ghz if fpc and ghz else None
    emulated = emulating()
    masked = os.environ.get("GEOCOMPRESS_CPUID_MASKED") == "1"
    print(f"CPU: {model_name}; class {klass}"
          + (" (AVX2 emulated on this CPU: ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, "
             "GEOCOMPRESS_CPU_CLASS=avx2, "
             + ("CPUID masked to AVX2 for every library)" if masked else
                "no CPUID mask: ONNX Runtime NOT capped to AVX2)") if emulated else "")
          + f"; torch kernels: {torch.backends.cpu.get_cpu_capability()}")
    print(f"MGSSNet q{args.quality}, {n} tiles of 256 x 256 (sample scene), batch {args.batch}, "
          f"1 thread, default precision ('auto') here: {mode}; medians of {args.repeat} runs")
    if peak:
        print(f"peak assumed: {fpc} FLOP/cycle ({klass}, {mode}) x {ghz:.2f} GHz (cpuinfo) = "
              f"{peak:.0f} GFLOP/s per core")
    else:
        print(f"peak: no assumption for class {klass} in {mode}")
    print(f"{'':<8}{'CPU s/tile':>11}{'wall s/tile':>12}{'GFLOP/tile':>11}{'GFLOP/s':>9}{'of peak':>9}")
    for k in jobs:
        line = f"{k:<8}{med[k]:>11.3f}{wmed[k]:>12.3f}"
        if k in flops:
            rate = flops[k] / med[k]
            line += f"{flops[k]:>11.2f}{rate:>9.1f}" + (f"{rate / peak:>9.0%}" if peak else "")
        print(line)
    print(f"decode outside g_s (hyper decoder + autoregressive entropy decoding): "
          f"{med['decode'] - med['g_s']:.3f} s per tile ({1 - med['g_s'] / med['decode']:.0%})")
    if "read" in jobs:
        print("read: a store's readers (decompress, the lazy view) in 'auto' on CPU: the torch-free "
              "NumPy decoder (float32-onnx synthesis)")
    ok = True
    if klass == "AVX2":
        for k in ("encode", "decode", "read"):
            if k not in med:
                continue
            hit = med[k] <= AVX2_GOAL_S
            ok &= hit
            print(f"{k} on AVX2 ({mode}, 1 core): {med[k]:.3f} s per tile (goal <= {AVX2_GOAL_S}): "
                  + ("PASS" if hit else f"MISS by {med[k] / AVX2_GOAL_S:.2f}x"))
    if args.json:
        args.json.write_text(json.dumps({
            "cpu": model_name, "class": klass, "emulated_avx2": emulated, "cpuid_masked": masked,
            "ghz": ghz,
            "precision": mode, "quality": args.quality, "tiles": n, "batch": args.batch,
            "repeat": args.repeat, "cpu_s_per_tile": med, "wall_s_per_tile": wmed,
            "gflop_per_tile": flops, "peak_gflops": peak}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
