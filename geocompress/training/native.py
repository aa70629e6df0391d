"""Small C kernels for training, compiled on first use with the machine's C compiler and cached.

Only where PyTorch's own CPU kernel is measured to be the bottleneck (``benchmarks/train_speed.py``).
The kernels are optional: without a compiler (or on a failed build) :func:`load` returns None and
the caller keeps PyTorch's kernel, so nothing depends on them but speed.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

KERNELS = Path(__file__).with_name("kernels")
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fopenmp")


def cache_dir() -> Path:
    """Where compiled kernels are kept between runs (``$GEOCOMPRESS_CACHE/kernels``, else
    ``$XDG_CACHE_HOME/geocompress/kernels`` or ``~/.cache/geocompress/kernels``): the build is
    per machine, never shipped.

    Returns:
        The folder (not created here).
    """
    root = os.environ.get("GEOCOMPRESS_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "geocompress"
    return Path(root) / "kernels"


def _cpu_key() -> str:
    """-march=native code must not run on another CPU: the cache key includes its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        flags = next(line for line in lines if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = platform.processor()
    return flags + platform.machine()


@cache
def load(name: str) -> ctypes.CDLL | None:
    """``kernels/NAME.c`` as a loaded library, or None where it cannot be built here.

    Args:
        name: the kernel's file stem in ``geocompress/training/kernels``.

    Returns:
        The library, or None (no compiler, a failed build, or ``GEOCOMPRESS_NATIVE=0``): callers
        then use torch's own path, so training never depends on a compiler.
    """
    if os.environ.get("GEOCOMPRESS_NATIVE", "1") == "0":
        return None
    src = KERNELS / f"{name}.c"
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        log.info("no C compiler: %s uses PyTorch's kernel", name)
        return None
    key = hashlib.sha256(src.read_bytes() + " ".join(FLAGS).encode() + _cpu_key().encode()).hexdigest()[:16]
    lib = cache_dir() / f"{name}-{key}.so"
    tmp = None
    try:
        if not lib.exists():
            lib.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=lib.parent, suffix=".so")
            os.close(fd)
            subprocess.run([cc, *FLAGS, str(src), "-o", tmp], check=True, capture_output=True,
                           timeout=120)
            os.replace(tmp, lib)  # atomic: a concurrent build never exposes a half-written file
        return ctypes.CDLL(str(lib))
    except (OSError, subprocess.SubprocessError) as e:  # no cache dir, compiler error, bad .so
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        log.warning("could not build %s (%s): using PyTorch's kernel", name, e)
        return None


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` (N C H W) as float32 with N H W C memory, what the kernels read and write (no copy
    when it already is).

    Args:
        t: an ``N x C x H x W`` tensor.

    Returns:
        A detached float32 channels-last tensor.
    """
    return t.detach().float().contiguous(memory_format=torch.channels_last)
