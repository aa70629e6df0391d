"""Where a pipeline's tasks run: in the calling process for small jobs, else on Dask.

* **In process** (:class:`InProcessClient`): a job of at most :data:`SMALL_JOB_TILES` tiles, when
  neither ``scheduler`` nor ``workers`` is given. The same task functions run one after another
  in the calling thread (what Dask's synchronous scheduler does), with the codec loaded once in
  this process and torch using its cores; no cluster, no worker process, no second import of
  torch. A call on the bundled 16-tile sample then costs seconds, not the ~16 s a LocalCluster's
  start-up took (issue 38).
* **An embedded LocalCluster** (the default above that size, and whenever ``workers`` is given).
* **An existing cluster**: ``scheduler`` is its address (``tcp://host:8786``): nothing is
  started here and the cluster's own workers (CPU or GPU, see :mod:`.workers`) do the work.

Why 64 tiles: a LocalCluster's start-up (worker processes that each import torch, CompressAI and
the weights) measured 10-16 s on a 2-core EPYC, the work of 30-50 tiles on one core in float32
(0.33 s a tile each way). On k cores the cluster saves at most a (1 - 1/k) share of the codec's
time, and the in-process path uses the same cores through torch's own threads, so below ~85 tiles
on 2 cores the cluster cannot pay for its start-up, and on larger machines (more workers to start,
bf16 tiles at 0.05 s) the break-even is higher still: 64 tiles (a 2048 x 2048 scene of 256-pixel
tiles) is on the safe side everywhere. ``benchmarks/startup.py`` measures both paths.

The distributed scheduler is imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterable, Iterator

from .. import interrupt

SMALL_JOB_TILES = 64


def local_workers(workers: int | None) -> int:
    """LocalCluster size: one single-threaded worker per core by default (on small CPU machines
    separate processes beat one process's thread pool, ``benchmarks/worker_scaling.py``)."""
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return int(workers)


def runs_in_process(tiles: int, scheduler: str | None = None, workers: int | None = None,
                    gpu: bool = False, in_process: bool | None = None) -> bool:
    """Whether a job of ``tiles`` tiles runs in the calling process: ``in_process`` if given,
    else when it is small and no cluster was asked for (``scheduler``, ``workers``, ``gpu``)."""
    if in_process is not None:
        if in_process and scheduler:
            raise ValueError("in_process=True and a scheduler address: choose one")
        return bool(in_process)
    return not scheduler and workers is None and not gpu and int(tiles) <= SMALL_JOB_TILES


class LocalFuture:
    """A task of :class:`InProcessClient`: run when its result is first asked for (arguments
    that are futures, also inside lists, are resolved first), then kept."""

    _count = 0

    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        LocalFuture._count += 1
        self.key = f"{getattr(fn, '__name__', 'task')}-{LocalFuture._count}"
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._done, self._value = False, None

    def result(self) -> Any:
        if not self._done:
            if self._fn is None:
                raise RuntimeError(f"task {self.key} was cancelled")
            args = [_resolve(a) for a in self._args]
            kwargs = {k: _resolve(v) for k, v in self._kwargs.items()}
            self._value, self._done = self._fn(*args, **kwargs), True
            self._fn = self._args = self._kwargs = None  # inputs are not kept alive
        return self._value

    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        if not self._done:
            self._fn = self._args = self._kwargs = None


def _resolve(x: Any) -> Any:
    if isinstance(x, LocalFuture):
        return x.result()
    if isinstance(x, (list, tuple)) and any(isinstance(v, LocalFuture) for v in x):
        return type(x)(_resolve(v) for v in x)
    return x


class InProcessClient:
    """The part of ``distributed.Client`` the pipelines use (``submit``, ``map``, ``gather``),
    run in the calling thread: each task when :func:`as_completed` (or ``gather``) reaches it,
    in submission order, as Dask's synchronous scheduler runs a graph. A task's error is raised
    by its ``result()``, as with a Dask future."""

    def submit(self, fn: Callable, *args: Any, pure: bool = True, **kwargs: Any) -> LocalFuture:
        return LocalFuture(fn, args, kwargs)

    def map(self, fn: Callable, *iterables: Iterable, pure: bool = True) -> list[LocalFuture]:
        return [LocalFuture(fn, args, {}) for args in zip(*iterables)]

    def gather(self, futures: Iterable[LocalFuture]) -> list:
        return [f.result() for f in futures]


def as_completed(futures: list) -> Iterator:
    """``distributed.as_completed`` for a cluster's futures; in-process futures in order (each
    run as it is reached)."""
    futures = list(futures)
    if not futures:  # e.g. a resumed store with nothing left to do
        return
    if all(isinstance(f, LocalFuture) for f in futures):
        for f in futures:
            interrupt.check()
            yield f
        return
    from distributed import as_completed as dask_as_completed

    yield from dask_as_completed(futures)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None, processes: bool = True,
                gpu: bool = False, in_process: bool = False) -> Iterator[Any]:
    """The client tasks are submitted to: :class:`InProcessClient` if ``in_process`` (see
    :func:`runs_in_process`), else a ``distributed.Client`` of the cluster at ``scheduler`` or
    of an embedded LocalCluster."""
    if in_process:
        yield InProcessClient()
        return
    from distributed import Client, LocalCluster

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
