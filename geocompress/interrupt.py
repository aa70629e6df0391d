"""Ctrl-C that always stops a run, with exit status 130 (issue 36, item 12).

Python raises ``KeyboardInterrupt`` in the main thread on SIGINT only when SIGINT had its default
disposition at start-up: a run started from a script, a job runner or ``cmd &`` inherits SIGINT
*ignored* and went on to the end, exiting 0. And a ``KeyboardInterrupt`` raised while the main
thread runs a finalizer (``__del__``, a weakref callback: plenty while a Dask cluster starts) is
printed as "Exception ignored" and lost. :func:`handling` installs a handler whatever the inherited
disposition and also *records* the interrupt, and :func:`check` (called where a pipeline passes a
stage: cluster started, before a store is marked complete or an output published) raises it again,
so an interrupt that some library swallowed still stops the run. A second Ctrl-C exits at once
(the store resumes and stale partial outputs are swept on the next run).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
_HIT = threading.Event()


def requested() -> bool:
    """Whether SIGINT arrived since :func:`handling` started."""
    return _HIT.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT arrived (even if its first raise was swallowed)."""
    if _HIT.is_set():
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    if _HIT.is_set():  # the second Ctrl-C: the user means now, whatever is being cleaned up
        sys.stderr.write("interrupted again: exiting now\n")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    _HIT.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """SIGINT stops the run from here on (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _HIT.clear()
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _HIT.clear()  # library calls after this one are not interrupted by it
