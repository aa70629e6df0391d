"""The Dask client a pipeline runs on: an embedded LocalCluster by default, or an existing cluster.

``scheduler`` may be a scheduler address (``tcp://host:8786``), in which case nothing is started
here and the cluster's own workers (CPU or GPU, see :mod:`.workers`) do the work.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from distributed import Client, LocalCluster

from .. import interrupt


def local_workers(workers: int | None) -> int:
    """LocalCluster size: one single-threaded worker per core by default (on small CPU machines
    separate processes beat one process's thread pool, ``benchmarks/worker_scaling.py``)."""
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return int(workers)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, processes: bool = True,
                gpu: bool = False) -> Iterator[Client]:
    if scheduler:
        with Client(scheduler) as client:
            interrupt.check()
            yield client
        return
    resources = {"GPU": 1} if gpu else None
    with LocalCluster(n_workers=local_workers(workers), threads_per_worker=1, processes=processes,
                      dashboard_address=None, resources=resources,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        interrupt.check()  # a Ctrl-C swallowed while the cluster started still stops the run
        yield client


def default_torch_threads(workers: int | None) -> int:
    """Split the machine's cores between local worker processes (no oversubscription)."""
    return max(1, (os.cpu_count() or 1) // local_workers(workers))
