"""The first GPU (issue 38, item 3): one prepared check of the codec on a CUDA device, run within
minutes the first time a session is lent one; on a machine without CUDA it runs the same stages on
the CPU (small sizes: the test suite does), so it is known to work before the GPU comes.

    python3 pipelines/gpu_check.py                     # on the GPU box (bash pipelines/device_train.sh gpu-check)
    .venv/bin/python pipelines/gpu_check.py --tiles 8 --batches 2 4 --scene 1024 --device cpu
    .venv/bin/python pipelines/gpu_check.py --catalog RUN.json   # here: its figures into catalogs/benchmarks.md

Stages, each written into the JSON as soon as it is done (a run stopped at its time limit still
returns what it measured):

1. **throughput**: encode and decode of ``--tiles`` synthetic 256 x 256 tiles with the shipped
   default weights (``geocompress.load_codec()``) in the default precision (``auto``: bfloat16
   on GPUs) at each of ``--batches``: tiles/s, megapixels/s and the GPU's busy share while it
   ran (NVML via pynvml, else ``torch.cuda.utilization``, else ``n/a``).
2. **cross-device**: the codec's promise that strings written on one device decode on another to
   the same latents and pixels, in the exact mode (``precision="float64"``): tiles of the sample
   scene encoded on the GPU decode on the CPU path to identical latents (``decode_latents``) and
   pixels, and the reverse. Without a GPU the two sides are two CPU codecs of different batch
   sizes and torch thread counts (the JSON's ``mode`` says so).
3. **scene**: a ``--scene`` x ``--scene`` round trip through the library's scene path
   (``compress_scene`` to a Zarr store, ``decompress_scene`` to a COG) of a VRT mosaic of the
   sample scene (``benchmarks/_common.mosaic_vrt``: read window by window, no large file on disk);
   on CUDA the compress workers declare the GPU (``gpu=True``), the decode runs on CPU workers
   (the scene decoder has no GPU option). Wall time, tiles/s, bpp, peak RSS of the process tree.
   ``--scene 0`` skips it.

Output: the JSON (``--out``, default ``$OUT/gpu_check.json`` when ``$OUT`` is set, else
``gpu_check.json``) and a markdown table on stdout. ``--catalog JSON`` writes a GPU run's figures
into ``catalogs/benchmarks.md`` (its table row and a section of its own); a CPU run's JSON is
refused, so CPU figures never stand in the catalog as GPU ones.

Supersedes ``benchmarks/gpu_codec.py`` (which now calls this script).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

TILE = 256
EXACT = "float64"  # geocompress.codec.precision: the one mode identical on every machine
CATALOG = REPO / "catalogs" / "benchmarks.md"
BEGIN, END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"


# ----------------------------------------------------------------------------- busy share


class Utilisation:
    """Samples the GPU's busy share (percent of time a kernel ran) every 50 ms in a thread while
    a block runs: NVML through pynvml where it imports, else ``torch.cuda.utilization`` (which
    asks NVML itself), else nothing (``mean`` is None, ``source`` 'n/a')."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._read: Callable[[], float] | None = None
        self.source = "n/a"
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            self._read = lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            self.source = "nvml (pynvml)"
        except Exception:  # noqa: BLE001 - optional
            try:
                torch.cuda.utilization(device)
                self._read = lambda: float(torch.cuda.utilization(device))
                self.source = "torch.cuda.utilization"
            except Exception:  # noqa: BLE001 - optional
                self._read = None

    def __enter__(self) -> "Utilisation":
        if self._read is not None:
            def loop() -> None:
                while not self._stop.is_set():
                    self.samples.append(self._read())
                    time.sleep(0.05)
            self._thread = threading.Thread(target=loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._read is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


# ----------------------------------------------------------------------------- helpers


def load(device: str, batch: int, precision: str, checkpoint: str | None = None):
    """The shipped default weights (or ``checkpoint``) as a codec on ``device``."""
    import geocompress

    kw = {"device": device, "batch_size": batch, "precision": precision}
    if checkpoint:
        return geocompress.load_codec(checkpoint=checkpoint, **kw)
    return geocompress.load_codec(**kw)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check_tiles(n: int) -> tuple[np.ndarray, str]:
    """``n`` tiles of the sample scene (real imagery) for the cross-device check, or synthetic ones
    where rasterio is missing (a bare GPU image)."""
    from _common import sample_tiles, synthetic_tiles

    try:
        x = sample_tiles(n)
        if len(x) >= n:
            return x, "sample scene"
    except ImportError:
        pass
    return synthetic_tiles(n, noise=12, vary=True), "synthetic"


class threads:
    """torch runs ``n`` threads inside the block (None: unchanged)."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


# ----------------------------------------------------------------------------- stages


def throughput(device: torch.device, n: int, batches: list[int], precision: str,
               checkpoint: str | None) -> dict[str, Any]:
    from _common import synthetic_tiles

    x = synthetic_tiles(n, noise=12, vary=False)
    mpx = n * TILE * TILE / 1e6
    rows = []
    codec = None
    for batch in batches:
        codec = load(str(device), batch, precision, checkpoint)
        codec.decode(codec.encode(x[:min(batch, n)]))  # warm-up: kernels, allocator, tables
        sync(device)
        row: dict[str, Any] = {"batch": batch}
        strings: list[bytes] = []
        for name in ("encode", "decode"):
            with Utilisation(device) as util:
                t = time.perf_counter()
                if name == "encode":
                    strings = codec.encode(x)
                else:
                    codec.decode(strings)
                sync(device)
                wall = time.perf_counter() - t
            row[f"{name}_s"] = round(wall, 3)
            row[f"{name}_tiles_s"] = round(n / wall, 2)
            row[f"{name}_mpx_s"] = round(mpx / wall, 3)
            row[f"{name}_busy_pct"] = util.mean if util.mean is not None else "n/a"
            busy_source = util.source
        row["bpp"] = round(8 * sum(map(len, strings)) / (n * TILE * TILE), 4)
        rows.append(row)
    return {"tiles": n, "precision": codec.precision if codec else precision,
            "busy_source": busy_source, "rows": rows}


def _same_latents(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(
        len(ta) == len(tb) and all(torch.equal(u.cpu(), v.cpu()) for u, v in zip(ta, tb))
        for ta, tb in zip(a, b))


def _same_pixels(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


def cross_device(device: torch.device, n: int, checkpoint: str | None,
                 cpu_batches: tuple[int, int] = (1, 3), cpu_threads: tuple[int, int] = (1, 2)) -> dict[str, Any]:
    """Strings written by side A decode on side B to A's own latents and pixels, and the reverse,
    in the exact mode. Sides: the GPU and the CPU path; without a GPU two CPU codecs of other
    batch sizes and thread counts."""
    x, source = check_tiles(n)
    if device.type == "cuda":
        sides = [{"name": "gpu", "device": str(device), "batch": 16, "threads": None},
                 {"name": "cpu", "device": "cpu", "batch": 16, "threads": None}]
        mode = "gpu <-> cpu"
    else:
        sides = [{"name": "cpu-a", "device": "cpu", "batch": cpu_batches[0], "threads": cpu_threads[0]},
                 {"name": "cpu-b", "device": "cpu", "batch": cpu_batches[1], "threads": cpu_threads[1]}]
        mode = ("cpu <-> cpu: no CUDA device, so two CPU codecs of different batch sizes and torch "
                "thread counts stand in for the GPU and the CPU")
    codecs = [load(s["device"], s["batch"], EXACT, checkpoint) for s in sides]
    enc, lat, pix = [], [], []
    for s, c in zip(sides, codecs):
        with threads(s["threads"]):
            t = time.perf_counter()
            strings = c.encode(x)
            s["encode_s"] = round(time.perf_counter() - t, 3)
            enc.append(strings)
            lat.append(c.decode_latents(strings)[1])
            pix.append(c.decode(strings))
    out: dict[str, Any] = {"mode": mode, "precision": EXACT, "tiles": len(x), "tiles_source": source,
                           "sides": sides}
    for i, j in ((0, 1), (1, 0)):
        a, b = sides[i]["name"], sides[j]["name"]
        with threads(sides[j]["threads"]):
            l_ab = codecs[j].decode_latents(enc[i])[1]
            p_ab = codecs[j].decode(enc[i])
        out[f"{a}_encoded_{b}_decoded_latents_identical"] = _same_latents(l_ab, lat[i])
        out[f"{a}_encoded_{b}_decoded_pixels_identical"] = _same_pixels(p_ab, pix[i])
    out["strings_identical"] = enc[0] == enc[1]  # not promised; recorded
    out["identical"] = all(v for k, v in out.items() if k.endswith("_identical") and k != "strings_identical")
    return out


def scene(device: torch.device, size: int, batch: int, workers: int | None,
          decode_workers: int | None, work_dir: str | None) -> dict[str, Any]:
    """Round trip of a ``size`` x ``size`` VRT mosaic through compress_scene / decompress_scene."""
    from _common import mosaic_vrt
    from scene_roundtrip import PeakRSS

    from geocompress.scene import compress_scene, decompress_scene

    gpu = device.type == "cuda"
    row: dict[str, Any] = {"size": size, "compress_on": "cuda (gpu=True workers)" if gpu else "cpu",
                           "decompress_on": "cpu", "workers": workers, "decode_workers": decode_workers}
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        tmp = Path(tmp)
        vrt = mosaic_vrt(tmp / "mosaic.vrt", size)
        with PeakRSS() as mem:
            t = time.perf_counter()
            r = compress_scene(vrt, tmp / "scene.zarr", gpu=gpu, workers=workers, batch_size=batch,
                               progress=False)
            row["compress_s"] = round(time.perf_counter() - t, 2)
        row["tiles"] = r.tiles
        row["compress_tiles_s"] = round(r.tiles / row["compress_s"], 2)
        row["compress_peak_rss_mb"] = round(mem.peak / 2 ** 20)
        row["bpp"] = round(8 * r.tile_bytes / (size * size), 4)
        with PeakRSS() as mem:
            t = time.perf_counter()
            out = decompress_scene(tmp / "scene.zarr", tmp / "scene.tif", workers=decode_workers,
                                   batch_size=batch, progress=False)
            row["decompress_s"] = round(time.perf_counter() - t, 2)
        row["decompress_tiles_s"] = round(r.tiles / row["decompress_s"], 2)
        row["decompress_peak_rss_mb"] = round(mem.peak / 2 ** 20)
        row["output_mb"] = round(out.stat().st_size / 2 ** 20, 1)
        import rasterio

        with rasterio.open(out) as src:
            row["output_shape"] = [src.count, src.height, src.width]
    return row


# ----------------------------------------------------------------------------- report


def table(res: dict[str, Any]) -> str:
    lines = [f"**{res['device_name']}** ({res['device']}), host {res['cpu']} x {res['cpu_count']}, "
             f"torch {res['torch']}, weights {res['weights']}", ""]
    tp = res.get("throughput")
    if tp:
        lines += [f"Throughput, {tp['tiles']} tiles of 256 x 256, precision {tp['precision']}, "
                  f"busy share from {tp['busy_source']}:", "",
                  "| batch | encode tiles/s | encode MP/s | encode busy % | decode tiles/s | "
                  "decode MP/s | decode busy % | bpp |", "|---|---|---|---|---|---|---|---|"]
        for r in tp["rows"]:
            lines.append(f"| {r['batch']} | {r['encode_tiles_s']} | {r['encode_mpx_s']} | "
                         f"{r['encode_busy_pct']} | {r['decode_tiles_s']} | {r['decode_mpx_s']} | "
                         f"{r['decode_busy_pct']} | {r['bpp']} |")
        lines.append("")
    cd = res.get("cross_device")
    if cd:
        lines += [f"Cross-device ({cd['mode']}), {cd['tiles']} {cd['tiles_source']} tiles, "
                  f"precision {cd['precision']}:", ""]
        lines += [f"- {k.replace('_', ' ')}: **{v}**" for k, v in cd.items() if k.endswith("_identical")]
        lines.append("")
    sc = res.get("scene")
    if sc and "error" not in sc:
        lines += [f"Scene {sc['size']} x {sc['size']} ({sc['tiles']} tiles), {sc['bpp']} bpp:", "",
                  "| direction | on | wall s | tiles/s | peak RSS MB |", "|---|---|---|---|---|",
                  f"| compress | {sc['compress_on']} | {sc['compress_s']} | {sc['compress_tiles_s']} | "
                  f"{sc['compress_peak_rss_mb']} |",
                  f"| decompress | {sc['decompress_on']} | {sc['decompress_s']} | "
                  f"{sc['decompress_tiles_s']} | {sc['decompress_peak_rss_mb']} |", ""]
    elif sc:
        lines += [f"Scene: not measured ({sc['error']})", ""]
    return "\n".join(lines)


def write_catalog(json_path: Path, catalog: Path = CATALOG) -> None:
    """A GPU run's figures into ``catalog``: the benchmark table's GPU row and a section between
    the gpu-check markers (both replaced on a later run)."""
    res = json.loads(Path(json_path).read_text())
    if res.get("device") != "cuda":
        raise SystemExit(f"{json_path} is a {res.get('device')} run: only a GPU run's figures go "
                         f"into {catalog.name}")
    text = catalog.read_text()
    tp, cd, sc = res.get("throughput") or {}, res.get("cross_device") or {}, res.get("scene") or {}
    best = max(tp.get("rows", []), key=lambda r: r["encode_tiles_s"] + r["decode_tiles_s"], default=None)
    figure = []
    if best:
        figure.append(f"batch {best['batch']}: encode **{best['encode_tiles_s']}** / decode "
                      f"**{best['decode_tiles_s']}** tiles/s")
    if sc and "error" not in sc:
        figure.append(f"{sc['size']}^2 scene {sc['compress_s']} s / {sc['decompress_s']} s")
    if cd:
        figure.append(f"GPU<->CPU decode identical (latents, pixels): {cd.get('identical')}")
    row = (f"| `pipelines/gpu_check.py` ({res['date']}, {res['device_name']}) | tiles/s, MP/s and "
           f"busy share at batches {', '.join(str(r['batch']) for r in tp.get('rows', []))}; a "
           f"whole-scene round trip; GPU-written strings decoded on the CPU and the reverse "
           f"(float64) | {'; '.join(figure)}; see below | cross-device identical |")
    out, replaced = [], False
    for line in text.splitlines():
        if line.startswith("| `gpu_codec.py`") or line.startswith("| `pipelines/gpu_check.py`"):
            if not replaced:
                out.append(row)
                replaced = True
            continue
        out.append(line)
    text = "\n".join(out) + "\n"
    if not replaced:
        raise SystemExit(f"{catalog}: no benchmark row of gpu_codec.py / gpu_check.py to replace")
    section = "\n".join([BEGIN, "", f"## First GPU ({res['date']}, `pipelines/gpu_check.py`)", "",
                         table(res), END])
    if BEGIN in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    catalog.write_text(text)
    print(f"{catalog}: GPU figures of {json_path} written")


# ----------------------------------------------------------------------------- main


def default_out() -> Path:
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda where there is one)")
    ap.add_argument("--tiles", type=int, default=None, help="throughput tiles (default 512 on GPU, 8 on CPU)")
    ap.add_argument("--batches", type=int, nargs="+", default=None, help="default 16 32 64 on GPU, 2 4 on CPU")
    ap.add_argument("--precision", default="auto", help="throughput precision (default: the codec's auto)")
    ap.add_argument("--cross-tiles", type=int, default=None, help="cross-device tiles (default 16; 4 on CPU)")
    ap.add_argument("--scene", type=int, default=None,
                    help="scene side in pixels (default 17408 on GPU, 1024 on CPU; 0 skips)")
    ap.add_argument("--scene-batch", type=int, default=None, help="scene codec batch (default 32 GPU, 8 CPU)")
    ap.add_argument("--workers", type=int, default=None,
                    help="compress workers (default 8 on GPU, each declaring the GPU; on CPU: the "
                         "library's default, in process for small scenes)")
    ap.add_argument("--decode-workers", type=int, default=None, help="decompress workers (library default)")
    ap.add_argument("--checkpoint", help="weights file (default: the shipped default weights)")
    ap.add_argument("--work-dir", help="temporary folder for the scene (default: the system's)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default $OUT/gpu_check.json)")
    ap.add_argument("--catalog", type=Path, metavar="JSON",
                    help="only write this GPU run's JSON into catalogs/benchmarks.md")
    ap.add_argument("--catalog-file", type=Path, default=CATALOG, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.catalog:
        write_catalog(a.catalog, a.catalog_file)
        return None
    if a.device == "auto":
        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    gpu = device.type == "cuda"
    tiles = a.tiles or (512 if gpu else 8)
    batches = a.batches or ([16, 32, 64] if gpu else [2, 4])
    size = a.scene if a.scene is not None else (17408 if gpu else 1024)
    workers = a.workers if a.workers is not None else (8 if gpu else None)
    out = a.out or default_out()
    out.parent.mkdir(parents=True, exist_ok=True)

    import geocompress

    t0 = time.perf_counter()
    probe = load("cpu", 1, "float32", a.checkpoint)
    res: dict[str, Any] = {
        "script": "pipelines/gpu_check.py", "date": time.strftime("%Y-%m-%d"), "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if gpu else f"CPU ({cpu_name()})",
        "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "geocompress": geocompress.__version__,
        "weights": f"{probe.arch} q{probe.quality:g} {probe.digest}" + (f" ({a.checkpoint})" if a.checkpoint else ""),
        "argv": list(argv if argv is not None else sys.argv[1:])}
    del probe

    def save() -> None:
        res["wall_s"] = round(time.perf_counter() - t0, 1)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1) + "\n")
        tmp.replace(out)

    def stage(name: str, fn: Callable[[], dict[str, Any]], optional: bool = False) -> None:
        t = time.perf_counter()
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        try:
            res[name] = fn()
        except Exception as e:  # noqa: BLE001 - on the GPU box the other stages' figures still come back
            if not (gpu or optional):
                raise
            res[name] = {"error": f"{type(e).__name__}: {e}",
                         "traceback": traceback.format_exc(limit=4)[-2000:]}
        res[name]["stage_s"] = round(time.perf_counter() - t, 1)
        save()

    stage("throughput", lambda: throughput(device, tiles, batches, a.precision, a.checkpoint))
    stage("cross_device", lambda: cross_device(device, a.cross_tiles or (16 if gpu else 4), a.checkpoint))
    if size > 0:
        stage("scene", lambda: scene(device, size, a.scene_batch or (32 if gpu else 8), workers,
                                     a.decode_workers, a.work_dir))
    save()
    print(table(res))
    print(f"figures: {out}")
    return res


if __name__ == "__main__":
    main()
