"""Calls as a user makes them: Ctrl-C stops any run; small jobs run in the calling process, with
the same bytes and pixels as on a cluster (issue 36 item 12, issue 38 item 1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import natural_tile
from .test_scene import write_scene

GEOCOMPRESS = str(Path(sys.executable).with_name("geocompress"))


def _children(pid: int) -> list[str]:
    """Processes started by any thread of ``pid`` (a Nanny starts its worker from the IO loop)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += (task / "children").read_text().split()
        except OSError:
            pass
    return out


def _completed(store: Path) -> bool:
    from geocompress.store import TileStore

    if not store.exists():
        return False
    try:
        return TileStore.open(store, "r").is_complete
    except Exception:  # noqa: BLE001 - a half-made store is not a completed one
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and POSIX signals")
@pytest.mark.parametrize("when", ["after-1s-sigint-inherited-ignored", "while-the-cluster-starts"])
def test_ctrl_c_stops_compress_at_any_moment_with_130(tmp_path, when):
    """SIGINT ~1 s after start (SIGINT inherited ignored, as from `cmd &` in a script: the run went
    on and exited 0), and while the LocalCluster's worker processes start (issue 36, item 12)."""
    scene = write_scene(tmp_path / "tiny.tif", natural_tile(128, 128, seed=3))
    store = tmp_path / "tiny.zarr"
    cmd = [GEOCOMPRESS, "--quiet", "compress", str(scene), str(store), "--untrained",
           "--tile", "64"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if when.startswith("after-1s"):
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        time.sleep(1.0)
    else:  # --workers: the cluster path; wait for its first worker process to be spawned
        p = subprocess.Popen(cmd + ["--workers", "1"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 120
        while not _children(p.pid) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, "the run ended before its cluster started"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, out, err[-2000:])
    assert "interrupted" in err and not out.strip()
    assert not _completed(store)


def test_compressai_loads_without_its_point_cloud_half():
    """`import geocompress` then the codec: no torch_geometric (~3 s); CompressAI's other parts
    still import on demand, and its transform registry fills on first read (issue 38)."""
    code = ("import sys, geocompress.codec, geocompress.models; "
            "assert 'torch_geometric' not in sys.modules, 'torch_geometric imported'; "
            "import compressai; assert compressai.get_entropy_coder() == 'ans'; "
            "assert compressai.__version__; from compressai.zoo import image_models; "
            "image_models['bmshj2018-factorized'](quality=1, pretrained=False); "
            "from compressai.datasets import ImageFolder; "
            "from compressai.registry import TRANSFORMS; assert 'RandomCrop' in TRANSFORMS; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def _files(store: Path) -> dict[str, bytes]:
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


def test_small_job_in_process_writes_the_cluster_path_bytes_and_pixels(tmp_path):
    """The in-process path (small jobs, issue 38) and the cluster path run the same tasks: the
    same tile strings, masks and shard files, and the same decoded pixels, whole and windowed."""
    import numpy as np
    import rasterio
    import xarray as xr

    from geocompress.scene import compress_scene, decompress_scene
    from geocompress.scene.cluster import SMALL_JOB_TILES, runs_in_process
    from geocompress.store import TileStore

    from .test_scene import TINY

    data = natural_tile(150, 200, seed=11)
    data[data == 0] = 1
    data[:, :64, :64] = 0                    # a nodata tile, nodata pixels, a constant tile
    data[:, 64:80, :30] = 0
    data[:, 64:128, 128:192] = 77
    scene = write_scene(tmp_path / "scene.tif", data, nodata=0)
    stores, tifs, wins = {}, {}, {}
    for mode, local in (("cluster", False), ("in-process", True)):
        stores[mode] = tmp_path / f"{mode}.zarr"
        compress_scene(scene, stores[mode], **{**TINY, "processes": False}, workers=1,
                       torch_threads=1, in_process=local)
        tifs[mode] = decompress_scene(stores[mode], tmp_path / f"{mode}.tif", processes=False,
                                      progress=False, workers=1, in_process=local)
        wins[mode] = decompress_scene(stores[mode], tmp_path / f"{mode}-w.tif", processes=False,
                                      progress=False, window=(30, 50, 64, 64), in_process=local)
    a, b = (TileStore.open(stores[m], "r") for m in ("cluster", "in-process"))
    assert a.status_counts()["WRITTEN"] == 10 and a.is_complete and b.is_complete
    assert [bytes(s or b"") for s in a.read_strings().ravel()] == \
        [bytes(s or b"") for s in b.read_strings().ravel()]
    np.testing.assert_array_equal(a.read_valid(), b.read_valid())
    fa, fb = _files(stores["cluster"]), _files(stores["in-process"])
    assert fa.keys() == fb.keys()
    differ = [k for k in fa if fa[k] != fb[k] and not k.endswith(".json")]  # json: paths, times
    assert not differ, differ
    for pair in (tifs, wins):
        with rasterio.open(pair["cluster"]) as x, rasterio.open(pair["in-process"]) as y:
            np.testing.assert_array_equal(x.read(), y.read())
            np.testing.assert_array_equal(x.read_masks(), y.read_masks())
    # the lazy view reads the same pixels (decoded in this process, whatever the scheduler)
    arr = xr.open_dataset(stores["in-process"], engine="geocompress")["band_data"]
    with rasterio.open(tifs["cluster"]) as f:
        np.testing.assert_array_equal(arr[:, 10:140, 20:190].values, f.read()[:, 10:140, 20:190])
    # the choice itself: small and nothing asked -> in process; asked or large -> cluster
    assert runs_in_process(12) and runs_in_process(SMALL_JOB_TILES)
    assert not runs_in_process(SMALL_JOB_TILES + 1)
    assert not runs_in_process(4, scheduler="tcp://x:8786") and not runs_in_process(4, workers=2)
    assert not runs_in_process(4, gpu=True) and runs_in_process(10_000, in_process=True)


def test_a_store_opens_without_torch_or_the_model_and_loads_it_on_first_read(tmp_path):
    """`xr.open_dataset(store, engine="geocompress")` reads only the store's bookkeeping; torch,
    CompressAI's modules and the weights load when the first tile is decoded (issue 38)."""
    from geocompress.scene import compress_scene

    from .test_scene import TINY

    scene = write_scene(tmp_path / "s.tif", natural_tile(128, 128, seed=5))
    store = tmp_path / "s.zarr"
    compress_scene(scene, store, **TINY)
    code = ("import sys, xarray as xr; ds = xr.open_dataset(sys.argv[1], engine='geocompress'); "
            "a = ds['band_data']; "
            "print(sorted(m for m in ('torch', 'compressai.models', 'distributed') "
            "if m in sys.modules)); v = a[:, :8, :8].values; print('torch' in sys.modules, v.shape)")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(store)],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["[]", "True (3, 8, 8)"], out.stdout
