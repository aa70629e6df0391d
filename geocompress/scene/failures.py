"""Failures that end a run with one line: a full disk, and task errors on a Dask cluster.

* **Disk full.** ``ENOSPC`` reaches us in three dresses: an ``OSError`` with that errno (zarr's
  writes of a store, Python's own file operations), a GDAL error that only says "Write failed" /
  "IO error writing tag data" (the real cause, "No space left on device", was printed by libtiff
  on the process's stderr) and, on a cluster, the same ``OSError`` re-raised from a worker.
  :func:`disk_full` recognises all three (the last two by the free space left where the file was
  being written) and :class:`DiskFullError` says so in one line naming the path.
  :func:`gdal_stderr_quiet` keeps libtiff's "No space left on device" lines off the terminal
  (everything else GDAL prints there is passed on).
* **Task errors on a cluster.** A task that raises is logged by its Dask worker as a multi-line
  "Compute Failed" record with a traceback, and then raised again in this process, where the CLI
  prints it as one line. :func:`quiet_task_errors` (set by the CLI) makes the embedded
  LocalCluster's workers drop those records: the error itself still reaches the caller whole.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

NO_SPACE = "no space left on device"
LOW_SPACE_BYTES = 1 << 20  # a write that failed with less than this free: the disk was full


class DiskFullError(OSError):
    """A write ran out of space: one line naming the path (an ``OSError``, errno ENOSPC)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.errno = errno.ENOSPC

    def __str__(self) -> str:
        return str(self.args[0])


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _free_bytes(where: Path) -> int | None:
    for p in (where, *where.parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def disk_full(e: BaseException, where: Path | None = None) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a full disk, so that the run can say so
    in one line instead of a GDAL or zarr traceback.

    Args:
        e: the exception caught.
        where: the folder being written; with it, an ``OSError`` or GDAL error while it has less
            than :data:`LOW_SPACE_BYTES` free counts as a full disk too.

    Returns:
        True for errno ENOSPC, a message saying so, or a write error on a nearly full disk.
    """
    for x in _chain(e):
        if isinstance(x, DiskFullError) or getattr(x, "errno", None) == errno.ENOSPC:
            return True
        if NO_SPACE in str(x).lower():
            return True
    if where is None or not isinstance(e, Exception):
        return False
    gdal = any(type(x).__module__.startswith("rasterio") for x in _chain(e))
    if isinstance(e, OSError) or gdal:
        free = _free_bytes(Path(where))
        return free is not None and free < LOW_SPACE_BYTES
    return False


@contextlib.contextmanager
def disk_full_reported(path: Path, what: str, where: Path | None = None,
                       advice: str = "") -> Iterator[None]:
    """Re-raise a full disk met inside as one :class:`DiskFullError` line: ``"<path>: no space
    left on device while <what>; <advice>"``; any other error passes unchanged.

    Args:
        path: what was being written (named first in the message).
        what: the activity, e.g. ``"writing the store"``.
        where: the folder whose free space decides ambiguous write errors (:func:`disk_full`).
        advice: what the user can do, appended to the message.

    Returns:
        A context manager.

    Raises:
        DiskFullError: a full disk met inside the block.
    """
    try:
        yield
    except DiskFullError:
        raise
    except Exception as e:  # noqa: BLE001 - only a full disk is translated
        if not disk_full(e, where):
            raise
        raise DiskFullError(f"{path}: {NO_SPACE} while {what}" + (f"; {advice}" if advice else "")
                            ) from None


@contextlib.contextmanager
def gdal_stderr_quiet() -> Iterator[None]:
    """Run GDAL calls with the process's stderr (file descriptor 2, where libtiff prints its
    errors) captured, then pass on what was printed except lines saying the disk is full (the
    run reports that itself, in one line).

    Returns:
        A context manager.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded, captured): as is
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text = buf.read().decode(errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True)
                           if NO_SPACE not in line.lower())
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


# -- Dask -------------------------------------------------------------------------------------
_QUIET_TASK_ERRORS = False
TASK_LOGGERS = ("distributed.worker", "distributed.worker.state_machine")


def quiet_task_errors(on: bool = True) -> None:
    """Drop the "Compute Failed" records of embedded LocalCluster workers (the CLI: the error is
    printed once, as one line, by the command).

    Args:
        on: True to drop them from now on, False to let them through again.
    """
    global _QUIET_TASK_ERRORS
    _QUIET_TASK_ERRORS = bool(on)


def task_errors_quiet() -> bool:
    """Whether :func:`quiet_task_errors` is on (read when a LocalCluster starts).

    Returns:
        The flag.
    """
    return _QUIET_TASK_ERRORS


class _DropComputeFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


def silence_task_errors() -> None:
    """In this process (a worker): drop the loggers' "Compute Failed" records; idempotent."""
    for name in TASK_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropComputeFailed) for f in logger.filters):
            logger.addFilter(_DropComputeFailed())


def worker_plugin():
    """A ``distributed.WorkerPlugin`` that runs :func:`silence_task_errors` on every worker,
    those started later included.

    Returns:
        The plugin, to register with ``client.register_plugin``.
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietTaskErrors(WorkerPlugin):
        name = "geocompress-quiet-task-errors"

        def setup(self, worker) -> None:  # noqa: ARG002 - the plugin API
            from geocompress.scene.failures import silence_task_errors

            silence_task_errors()

    return QuietTaskErrors()
