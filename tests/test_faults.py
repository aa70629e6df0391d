"""A worker process killed in the middle of a scene costs nothing: the scene completes and the
store's bytes equal an undisturbed run's."""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
from distributed import Client, LocalCluster

from geocompress.geo import TileStatus
from geocompress.scene import compress_scene
from geocompress.store import TileStore

from .test_scene import TINY, write_scene
from .conftest import natural_tile


def test_killed_worker_mid_scene(tmp_path):
    data = natural_tile(192, 256, seed=21)
    src = write_scene(tmp_path / "scene.tif", data)
    kw = {**TINY, "shard": 1}  # 12 blocks: one task per tile
    kw.pop("processes")
    reference = compress_scene(src, tmp_path / "ref.zarr", processes=False, **kw)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        victim = max(pids.values())
        killed = []

        def kill_one(done: int) -> None:
            if not killed and done == 2:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        result = compress_scene(src, tmp_path / "faulty.zarr", scheduler=cluster.scheduler_address,
                                on_block=kill_one, **kw)
        assert killed, "the test did not kill a worker"
        assert victim not in client.run(os.getpid).values()  # the nanny replaced it

    ts = TileStore.open(tmp_path / "faulty.zarr")
    assert ts.is_complete and ts.status_counts()["PENDING"] == 0
    assert result.written == reference.written == 12
    a = [bytes(s) for s in ts.read_strings().ravel()]
    b = [bytes(s) for s in TileStore.open(tmp_path / "ref.zarr").read_strings().ravel()]
    assert a == b and all(a)
    assert (ts.status() == TileStatus.WRITTEN).all()
    np.testing.assert_array_equal(ts.read_masks(), TileStore.open(tmp_path / "ref.zarr").read_masks())
