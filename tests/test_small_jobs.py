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
