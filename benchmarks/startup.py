"""Fixed cost of a CLI call on the bundled 1024 x 1024 sample (16 tiles; issue 38, item 1).

For each call a user makes -- ``compress``, ``decompress``, ``decompress --window 300 300 64 64``
and, in a fresh Python, ``xr.open_dataset(store, engine="geocompress")`` plus the first read of
that 64 x 64 window -- the wall time of the call in a fresh process minus *the codec's own work
for the same tiles*, measured in the same run: the same call repeated warm in this process (model
loaded, imports done), with the time spent inside the codec (``TileCodec.encode``,
``TileDecoder.decode`` / ``decode_latents`` / ``synthesize``: the PyTorch codec's and the
torch-free NumPy decoder's) summed. What is left is start-up: interpreter, imports, model or
decoder load, and a cluster where one is started. Goal: <= 2 s each.

The lazy view decodes with the torch-free NumPy decoder where ONNX Runtime is installed
(:mod:`geocompress.codec.numpy_decoder`); its bundle is written the first time a machine reads
the weights. The run uses a fresh cache folder (``GEOCOMPRESS_CACHE``), so that first read is
timed once on its own (``open + first read, first time``) before the rounds, which then read as
every later call does; whether torch was imported by the read is reported.

Default calls run in the calling process (jobs of up to ``SMALL_JOB_TILES`` tiles); ``--cluster``
also times the same calls with ``--workers N`` (an embedded LocalCluster, the path every call took
before), so both are measured side by side in one run (a busy machine shifts both alike).
``geocompress info`` (no codec work) is timed as well. With ``--repeat N`` every call and the warm
codec time are measured N times, interleaved, and the medians are reported (the fixed cost of
each round is its wall time minus that round's codec time), with the range of the fixed cost.

    .venv/bin/python benchmarks/startup.py [--cluster] [--repeat 5] [--out catalogs/benchmarks-startup.md]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cpu_label, geocompress_cmd  # noqa: E402

SAMPLE = REPO / "geocompress" / "data" / "sample_aerial_korea_0.6m.tif"
WINDOW = (300, 300, 64, 64)
GOAL_S = 2.0
OPEN_READ = ("import sys, time, xarray as xr; t = time.perf_counter(); "
             "ds = xr.open_dataset(sys.argv[1], engine='geocompress'); t_open = time.perf_counter() - t; "
             "torch_at_open = 'torch' in sys.modules; "
             "v = ds['band_data'][:, {y}:{y}+{h}, {x}:{x}+{w}].values; "
             "print(t_open, torch_at_open, 'torch' in sys.modules)")


def wall(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return dt, out.stdout


class CodecClock:
    """Time spent inside the codec's entry points (outermost calls only), in this process."""

    METHODS = ("encode", "decode", "decode_latents", "synthesize")

    def __init__(self) -> None:
        from geocompress.codec.decoding import TileDecoder
        from geocompress.codec.tile_codec import TileCodec

        # decoding is TileDecoder's (the PyTorch codec and the torch-free NumpyDecoder alike)
        self.owners = {name: TileCodec if name == "encode" else TileDecoder for name in self.METHODS}
        self.seconds, self.depth, self.saved = 0.0, 0, {}

    def __enter__(self) -> "CodecClock":
        for name in self.METHODS:
            original = getattr(self.owners[name], name)
            self.saved[name] = original

            @functools.wraps(original)
            def timed(*args, _f=original, **kwargs):
                self.depth += 1
                t = time.perf_counter()
                try:
                    return _f(*args, **kwargs)
                finally:
                    self.depth -= 1
                    if self.depth == 0:
                        self.seconds += time.perf_counter() - t

            setattr(self.owners[name], name, timed)
        return self

    def __exit__(self, *exc) -> None:
        for name, f in self.saved.items():
            setattr(self.owners[name], name, f)


class WarmCalls:
    """The same calls repeated warm in this process: (codec seconds, whole warm call seconds)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        for f in self.calls("warm-up").values():  # imports, model load, caches: not measured
            f()

    def calls(self, tag: str) -> dict:
        import xarray as xr

        from geocompress.scene import compress_scene, decompress_scene, store_info

        store, tmp = self.tmp / f"warm-{tag}.zarr", self.tmp
        return {
            "compress": lambda: compress_scene(SAMPLE, store, progress=False, in_process=True),
            "decompress": lambda: decompress_scene(store, tmp / f"warm-{tag}.tif", progress=False,
                                                   in_process=True),
            "decompress --window": lambda: decompress_scene(
                store, tmp / f"warm-{tag}-w.tif", window=WINDOW, progress=False, in_process=True),
            "info": lambda: store_info(store),
            "open + first read": lambda: xr.open_dataset(store, engine="geocompress")["band_data"][
                :, WINDOW[1]:WINDOW[1] + WINDOW[3], WINDOW[0]:WINDOW[0] + WINDOW[2]].values,
        }

    def measure(self, k: int) -> dict[str, tuple[float, float]]:
        out = {}
        for name, f in self.calls(str(k)).items():
            with CodecClock() as clock:
                t = time.perf_counter()
                f()
                out[name] = (clock.seconds, time.perf_counter() - t)
        shutil.rmtree(self.tmp / f"warm-{k}.zarr", ignore_errors=True)
        return out


def cli_walls(tmp: Path, extra: list[str], tag: str, env: dict) -> dict[str, float]:
    gc = geocompress_cmd()
    store, out = tmp / f"cli-{tag}.zarr", {}
    out["compress"] = wall([*gc, "--quiet", "compress", str(SAMPLE), str(store), *extra], env)[0]
    out["decompress"] = wall([*gc, "--quiet", "decompress", str(store), str(tmp / f"cli-{tag}.tif"),
                              *extra], env)[0]
    out["decompress --window"] = wall(
        [*gc, "--quiet", "decompress", str(store), str(tmp / f"cli-{tag}-w.tif"), "--window",
         *map(str, WINDOW), *extra], env)[0]
    out["info"] = wall([*gc, "info", str(store)], env)[0]
    x, y, w, h = WINDOW
    code = OPEN_READ.format(x=x, y=y, w=w, h=h)
    out["open + first read"], text = wall([sys.executable, "-W", "ignore", "-c", code, str(store)], env)
    out["open alone"] = float(text.split()[0])
    out["torch at open"] = text.split()[1] == "True"
    out["torch at read"] = text.split()[2] == "True"
    return out


def first_read(tmp: Path, env: dict) -> float:
    """Wall time of the first open + read of the sample's store on a machine (an empty cache:
    the view's decoder bundle is written by this call)."""
    store = tmp / "first.zarr"
    wall([*geocompress_cmd(), "--quiet", "compress", str(SAMPLE), str(store)], env)
    x, y, w, h = WINDOW
    seconds = wall([sys.executable, "-W", "ignore", "-c", OPEN_READ.format(x=x, y=y, w=w, h=h),
                    str(store)], env)[0]
    shutil.rmtree(store, ignore_errors=True)
    return seconds


CALLS = ["compress", "decompress", "decompress --window", "info", "open + first read"]


def measure(a: argparse.Namespace, tmp: Path) -> tuple[dict, list[dict], float]:
    """Every CLI wall time per path and call, and the warm codec times, ``a.repeat`` rounds,
    interleaved so that load drifts hit every path and the warm run alike, and the first read
    of new weights (before the rounds)."""
    env = {**os.environ}
    paths = {"in process": []}
    if a.cluster:
        paths[f"LocalCluster (--workers {os.cpu_count()})"] = ["--workers", str(os.cpu_count())]
    walls: dict[str, dict[str, list]] = {label: {} for label in paths}
    warm, work = None, []
    first = first_read(tmp, env)
    for k in range(a.repeat):
        for n, (label, extra) in enumerate(paths.items()):
            got = cli_walls(tmp, extra, f"{k}-{n}", env)
            shutil.rmtree(tmp / f"cli-{k}-{n}.zarr", ignore_errors=True)
            for key, v in got.items():
                walls[label].setdefault(key, []).append(v)
        warm = warm or WarmCalls(tmp)
        work.append(warm.measure(k))
        print(f"round {k + 1}/{a.repeat}: " + ", ".join(
            f"{c} {walls['in process'][c][-1]:.2f} s" for c in CALLS), flush=True)
    return walls, work, first


def table(walls: dict, work: list[dict]) -> list[dict]:
    """Medians per path and call; fixed = each round's wall minus that round's codec time."""
    med = statistics.median
    rows = []
    for label, w in walls.items():
        for c in CALLS:
            if c in ("info", "open + first read") and label != "in process":
                continue  # no --workers: the same in both columns
            fixed = [wall_k - r[c][0] for wall_k, r in zip(w[c], work)]
            rows.append({"path": label, "call": c, "wall_s": med(w[c]),
                         "codec_s": med(r[c][0] for r in work),
                         "warm_call_s": med(r[c][1] for r in work), "fixed_s": med(fixed),
                         "fixed_lo": min(fixed), "fixed_hi": max(fixed),
                         "goal_met": med(fixed) <= GOAL_S})
    return rows


def markdown(head: str, rows: list[dict], opened: dict, first: float, note: str) -> str:
    from geocompress.shipped import DEFAULT_ARCH

    med = statistics.median
    lines = ["# Fixed cost per CLI call (benchmarks/startup.py)", "",
             "Wall time of each call in a fresh process, minus the codec's own work for the same "
             "tiles (time inside `TileCodec.encode`, `TileDecoder.decode` / `decode_latents` / "
             "`synthesize`, measured warm in the same run): what is left is start-up "
             "(interpreter, imports, model or decoder load, a cluster where one is started) and "
             "the interpreter's exit. Bundled "
             "sample `geocompress/data/sample_aerial_korea_0.6m.tif` (1024 x 1024 RGB, 16 tiles "
             f"of 256), the shipped default `{DEFAULT_ARCH}` at its default quality, "
             "`--precision auto`; window "
             f"{' '.join(map(str, WINDOW))}. Goal: fixed <= {GOAL_S:g} s per call (issue 38).",
             "", f"- {head}", f"- open alone (no read): {med(opened['open alone']):.2f} s, torch "
             f"imported at open: {any(opened['torch at open'])}, by the first read: "
             f"{any(opened['torch at read'])}",
             f"- open + first read, the first time on a machine (an empty cache: the view's "
             f"decoder bundle is written, with torch): {first:.2f} s wall"]
    if note:
        lines.append(f"- {note}")
    lines += ["", f"| path | call | wall s | codec s | warm call s | fixed s | fixed range s | "
              f"goal <= {GOAL_S:g} s |", "|---|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['path']} | `{r['call']}` | {r['wall_s']:.2f} | {r['codec_s']:.2f} | "
              f"{r['warm_call_s']:.2f} | {r['fixed_s']:.2f} | {r['fixed_lo']:.2f}-{r['fixed_hi']:.2f} | "
              f"{'met' if r['goal_met'] else 'missed'} |" for r in rows]
    lines += ["", "Medians over the rounds; `fixed range s`: the fastest and slowest round. "
              "`warm call s`: the whole call repeated warm in one process (codec, raster and store "
              "I/O, GeoTIFF writing): the floor a call cannot go under.", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cluster", action="store_true",
                   help="also time the calls on an embedded LocalCluster (--workers N)")
    p.add_argument("--repeat", type=int, default=1,
                   help="rounds of every call (medians reported)")
    p.add_argument("--out", type=Path, help="write the figures as Markdown here")
    p.add_argument("--note", default="", help="a line about the machine's state for --out")
    a = p.parse_args()
    import geocompress

    geocompress.passive_omp_wait()  # as the CLI and a store's open do, before torch loads here
    cpu = cpu_label()
    tmp = Path(tempfile.mkdtemp(prefix="gc-startup-"))
    os.environ["GEOCOMPRESS_CACHE"] = str(tmp / "cache")  # this run's, and its subprocesses'
    try:
        walls, work, first = measure(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = table(walls, work)
    from geocompress.scene.cluster import IN_PROCESS_TORCH_THREADS, SMALL_JOB_TILES

    from geocompress.codec.numpy_decoder import runtime_available

    view = ("the torch-free NumPy decoder (ONNX Runtime's threads: OMP_NUM_THREADS="
            f"{os.environ.get('OMP_NUM_THREADS', 'unset')})" if runtime_available()
            else f"PyTorch ({__import__('torch').get_num_threads()} thread(s); ONNX Runtime absent or "
            "GEOCOMPRESS_ONNX=0)")
    head = (f"CPU: {cpu}, {os.cpu_count()} cores; in-process calls (<= "
            f"{SMALL_JOB_TILES} tiles) and the warm codec time use {IN_PROCESS_TORCH_THREADS} torch "
            f"thread, the lazy view's read {view}; {a.repeat} round(s), medians")
    print(head)
    print(f"{'path':<26} {'call':<20} {'wall s':>7} {'codec s':>8} {'warm s':>7} {'fixed s':>8} "
          f"{'range':>11}  goal")
    for r in rows:
        print(f"{r['path']:<26} {r['call']:<20} {r['wall_s']:>7.2f} {r['codec_s']:>8.2f} "
              f"{r['warm_call_s']:>7.2f} {r['fixed_s']:>8.2f} {r['fixed_lo']:>5.2f}-{r['fixed_hi']:<5.2f}"
              f"  {'<= 2 s' if r['goal_met'] else 'MISSED'}")
    opened = walls["in process"]
    print(f"open alone: {statistics.median(opened['open alone']):.2f} s (torch imported at open: "
          f"{any(opened['torch at open'])}, by the first read: {any(opened['torch at read'])}); "
          f"first read on a new machine: {first:.2f} s wall")
    if a.out:
        a.out.write_text(markdown(head, rows, opened, first, a.note))
        print(f"written: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
