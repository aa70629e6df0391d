"""Shared fixtures: small architectures (so the suite runs on 2 CPU cores) and the data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# ONNX Runtime off unless a test turns it on (tests/test_numpy_decoder.py, test_precision.py):
# 'auto' then resolves as on a machine without it, the same wherever the suite runs, and the lazy
# view decodes in the precision the CLI's tests compare it with
os.environ.setdefault("GEOCOMPRESS_ONNX", "0")
SMALL = {
    "mgssnet": {"N": 16, "M": 24},
    "mgssnet-vr": {"N": 16, "M": 24},
    "bmshj2018-factorized": {"N": 16, "M": 24},
    "bmshj2018-hyperprior": {"N": 16, "M": 24},
    "mbt2018-mean": {"N": 16, "M": 24},
    "mbt2018": {"N": 16, "M": 24},
    "cheng2020-attn": {"N": 16},
    "bmshj2018-factorized-ssif": {"N": 16, "M": 24},
    "bmshj2018-factorized-mhg": {"N": 16, "M": 24},
    "bmshj2018-factorized-lgcm": {"N": 16, "M": 24},
}


def pipeline_script(name: str):
    """``pipelines/<name>.py`` imported as a module (the pipelines are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "pipelines" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_dir() -> Path:
    return Path(os.environ.get("GEOCOMPRESS_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d} (set GEOCOMPRESS_DATA)")
    return d


def natural_tile(h: int = 64, w: int = 64, c: int = 3, dtype=np.uint8, seed: int = 0) -> np.ndarray:
    """Smooth structure plus texture: compresses like imagery, unlike white noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    peak = 255 if dtype == np.uint8 else 4095
    bands = []
    for b in range(c):
        f = 0.5 + 0.3 * np.sin(xx / (7 + 3 * b)) * np.cos(yy / (11 + b)) + 0.1 * rng.standard_normal((h, w))
        bands.append(np.clip(f, 0, 1) * peak)
    return np.stack(bands).round().astype(dtype)


@pytest.fixture(scope="session")
def small_codecs():
    """One untrained codec per architecture, built once per session."""
    import geocompress

    cache = {}

    def get(arch: str, **kw):
        key = (arch, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = geocompress.load_codec(arch, pretrained=False, **{**SMALL[arch], **kw})
        return cache[key]

    return get
