"""Where a pipeline's tasks run: in the calling process for small jobs, else on Dask.

* **In process** (:class:`InProcessClient`): a job of at most :data:`SMALL_JOB_TILES` tiles, when
  neither ``scheduler`` nor ``workers`` is given. The same task functions run one after another
  in the calling thread (what Dask's synchronous scheduler does), with the codec loaded once in
  this process and one torch thread (:data:`IN_PROCESS_TORCH_THREADS`); no cluster, no worker process, no second import of
  torch. A call on the bundled 16-tile sample then costs seconds, not the ~16 s a LocalCluster's
  start-up took (issue 38).
* **An embedded LocalCluster** (the default above that size, and whenever ``workers`` is given).
* **An existing cluster**: ``scheduler`` is its address (``tcp://host:8786``): nothing is
  started here and the cluster's own workers (CPU or GPU, see :mod:`.workers`) do the work.

Why 64 tiles: a LocalCluster's start-up S (worker processes that each import torch, CompressAI and
the weights) measured 10-16 s on a 2-core EPYC (``benchmarks/startup.py``: 8-13 s of fixed cost
per call, busy machine), the work of 30-50 tiles on one core at t = 0.33 s a tile (float32 on
AVX2). The in-process path runs one torch thread, like each default cluster worker; k workers
save at most n t (1 - 1/k) on n tiles, so the cluster pays for itself only above
n = S / (t (1 - 1/k)): ~85 tiles on 2 cores, more with faster tiles (bf16: t = 0.05 s) or more
workers to start. 64 tiles (a 2048 x 2048 scene of 256-pixel tiles) stays below that.

The distributed scheduler is imported only when a cluster is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator

from .. import interrupt

SMALL_JOB_TILES = 64


@dataclass(frozen=True)
class ClusterChoice:
    """Where a scene job's tasks run, how they are cut, and how the run shows its progress.

    One value for the options that always travel together through
    :func:`~geocompress.scene.compress_scene` and :func:`~geocompress.scene.decompress_scene`
    (the CLI builds it from ``--scheduler``, ``--workers``, ``--gpu`` and ``--quiet``).

    Args:
        scheduler: address of an existing Dask cluster (``tcp://host:8786``); its own workers
            (CPU or GPU, :mod:`.workers`) do the work and nothing is started here.
        workers: size of an embedded LocalCluster, whatever the job's size (default: one
            single-threaded worker per core, and only for jobs over :data:`SMALL_JOB_TILES`).
        processes: LocalCluster workers as processes (``False``: threads of this process).
        gpu: LocalCluster workers declare a GPU resource and run the model on it (compress).
        torch_threads: torch threads per worker, or in this process for an in-process run
            (default: the cores split between local workers; 1 in process).
        in_process: run the tasks in this process (``True``) or on Dask (``False``); default
            :func:`runs_in_process` decides from the job's size.
        tiles_per_task: tiles each encode or decode task handles: small enough that every worker
            has work and the progress bar moves.
        progress: show a progress bar.
        on_block: called with the number of shard blocks written so far after each one (compress;
            tests use it to interrupt a run at a known point).

    Examples:
        >>> from geocompress.scene.cluster import ClusterChoice
        >>> ClusterChoice(workers=2).replace(progress=False)
        ClusterChoice(scheduler=None, workers=2, processes=True, gpu=False, torch_threads=None, \
in_process=None, tiles_per_task=4, progress=False)
    """

    scheduler: str | None = None
    workers: int | None = None
    processes: bool = True
    gpu: bool = False
    torch_threads: int | None = None
    in_process: bool | None = None
    tiles_per_task: int = 4
    progress: bool = True
    on_block: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    def replace(self, **changes: Any) -> "ClusterChoice":
        """This choice with some fields changed (the dataclass is frozen).

        Args:
            **changes: field values.

        Returns:
            A new choice.
        """
        return replace(self, **changes)

    def runs_here(self, tiles: int) -> bool:
        """Whether a job of ``tiles`` tiles runs in this process (:func:`runs_in_process`).

        Args:
            tiles: the tiles the job touches.

        Returns:
            True for the in-process client, False for a Dask cluster.

        Raises:
            ValueError: ``in_process=True`` together with a scheduler address.
        """
        return runs_in_process(tiles, self.scheduler, self.workers, self.gpu, self.in_process)


def local_workers(workers: int | None) -> int:
    """LocalCluster size: one single-threaded worker per core by default (on small CPU machines
    separate processes beat one process's thread pool, ``benchmarks/worker_scaling.py``).

    Args:
        workers: the size asked for, or None.

    Returns:
        ``workers``, or the machine's core count.

    Raises:
        ValueError: fewer than one worker (a cluster that could never run a task).
    """
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return int(workers)


def runs_in_process(tiles: int, scheduler: str | None = None, workers: int | None = None,
                    gpu: bool = False, in_process: bool | None = None) -> bool:
    """Whether a job runs in the calling process (no cluster start-up: seconds instead of the ~10 s
    a LocalCluster costs, module docstring).

    Args:
        tiles: the tiles the job touches.
        scheduler: an existing cluster's address, if one was given.
        workers: a LocalCluster size, if one was given.
        gpu: whether GPU workers were asked for.
        in_process: the caller's explicit choice; None lets the job's size decide.

    Returns:
        ``in_process`` if given, else True for a job of at most :data:`SMALL_JOB_TILES` tiles when
        no cluster was asked for (``scheduler``, ``workers``, ``gpu``).

    Raises:
        ValueError: ``in_process=True`` together with a scheduler address (two answers to where
            the tasks run).
    """
    if in_process is not None:
        if in_process and scheduler:
            raise ValueError("in_process=True and a scheduler address: choose one")
        return bool(in_process)
    return not scheduler and workers is None and not gpu and int(tiles) <= SMALL_JOB_TILES


# One torch thread, as in each default LocalCluster worker (cores // workers = 1): the same float
# summation order, so the same bytes and pixels as the cluster path, and no intra-op threads that
# spin against other work: with two threads on a 2-core machine busy with another job, a decode
# of 16 tiles took 16-39 s instead of 1.5 s (the threads' busy-waiting; OMP_WAIT_POLICY=PASSIVE,
# set by ``import geocompress``, also prevents it).
IN_PROCESS_TORCH_THREADS = 1


@contextlib.contextmanager
def torch_threads_set(n: int) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` while the block runs, then restored (an in-process run
    must not leave the caller's torch changed). A process without torch is left so: the callers
    build their codec before the block (a compress run's model, a decompress run's decoder), so
    a run whose decoder needs no torch (:mod:`geocompress.codec.numpy_decoder`) never imports it.

    Args:
        n: the thread count.

    Returns:
        A context manager.
    """
    if "torch" not in sys.modules:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class LocalFuture:
    """A task of :class:`InProcessClient`: run when its result is first asked for (arguments
    that are futures, also inside lists, are resolved first), then kept.

    Args:
        fn: the task function.
        args: its positional arguments (futures among them are resolved first).
        kwargs: its keyword arguments.
    """

    _count = 0

    def __init__(self, fn: Callable, args: tuple, kwargs: dict):
        LocalFuture._count += 1
        self.key = f"{getattr(fn, '__name__', 'task')}-{LocalFuture._count}"
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._done, self._value = False, None

    def result(self) -> Any:
        """The task's value, running it on first call (as Dask's synchronous scheduler would).

        Returns:
            What the task returned.

        Raises:
            RuntimeError: the task was cancelled before it ran.
            Exception: whatever the task raised, as a Dask future's ``result()`` re-raises it.
        """
        if not self._done:
            if self._fn is None:
                raise RuntimeError(f"task {self.key} was cancelled")
            args = [_resolve(a) for a in self._args]
            kwargs = {k: _resolve(v) for k, v in self._kwargs.items()}
            self._value, self._done = self._fn(*args, **kwargs), True
            self._fn = self._args = self._kwargs = None  # inputs are not kept alive
        return self._value

    def done(self) -> bool:
        """Whether the task has run.

        Returns:
            True once :meth:`result` has computed the value.
        """
        return self._done

    def cancel(self) -> None:
        """Drop the task if it has not run (its inputs are released; :meth:`result` then raises)."""
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
        """One task, run later in this thread.

        Args:
            fn: the task function.
            *args: its positional arguments.
            pure: accepted for Dask's signature; every task runs once anyway.
            **kwargs: its keyword arguments.

        Returns:
            The task's :class:`LocalFuture`.
        """
        return LocalFuture(fn, args, kwargs)

    def map(self, fn: Callable, *iterables: Iterable, pure: bool = True) -> list[LocalFuture]:
        """One task per set of arguments, as ``distributed.Client.map``.

        Args:
            fn: the task function.
            *iterables: its positional arguments, zipped.
            pure: accepted for Dask's signature.

        Returns:
            The tasks' futures, in order.
        """
        return [LocalFuture(fn, args, {}) for args in zip(*iterables)]

    def gather(self, futures: Iterable[LocalFuture]) -> list:
        """The futures' values, running each in turn.

        Args:
            futures: the futures.

        Returns:
            Their values, in order.
        """
        return [f.result() for f in futures]


def as_completed(futures: list) -> Iterator:
    """``distributed.as_completed`` for a cluster's futures; in-process futures in order (each
    run as it is reached, with a check for Ctrl-C between them).

    Args:
        futures: Dask futures, or :class:`LocalFuture` s.

    Returns:
        An iterator over the futures as they complete.

    Raises:
        KeyboardInterrupt: an interrupt requested between two in-process tasks.
    """
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
                gpu: bool = False, in_process: bool = False,
                torch_threads: int | None = None) -> Iterator[Any]:
    """The client tasks are submitted to, for the duration of a ``with`` block.

    Args:
        scheduler: an existing cluster's address; nothing is started here.
        workers: the embedded LocalCluster's size (default one worker per core).
        processes: LocalCluster workers as processes (False: threads).
        gpu: LocalCluster workers declare a GPU resource.
        in_process: run the tasks in this thread (:class:`InProcessClient`; see
            :func:`runs_in_process`).
        torch_threads: in process, torch's thread count while the client is open (default 1, as
            each default LocalCluster worker has), then torch gets its own back.

    Returns:
        A context manager yielding the client.

    Raises:
        KeyboardInterrupt: a Ctrl-C swallowed while the cluster started still stops the run.
    """
    if in_process:
        with torch_threads_set(torch_threads or IN_PROCESS_TORCH_THREADS):
            yield InProcessClient()
        return
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            interrupt.check()
            yield client
        return
    resources = {"GPU": 1} if gpu else None
    # no dashboard; the scheduler's HTTP server (health routes) on a free port, not 8787: a
    # second job on the machine would warn "Port 8787 is already in use" through --quiet
    with LocalCluster(n_workers=local_workers(workers), threads_per_worker=1, processes=processes,
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                      resources=resources, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        from .failures import task_errors_quiet, worker_plugin

        if task_errors_quiet():  # the CLI prints a task's error once, as one line
            client.register_plugin(worker_plugin())
        interrupt.check()  # a Ctrl-C swallowed while the cluster started still stops the run
        yield client


def default_torch_threads(workers: int | None) -> int:
    """Split the machine's cores between local worker processes (no oversubscription).

    Args:
        workers: the LocalCluster size asked for, or None (one per core).

    Returns:
        Torch threads per worker, at least 1.
    """
    return max(1, (os.cpu_count() or 1) // local_workers(workers))
