"""Shared by the benchmarks: where the sample data is, and a VRT mosaic of any size.

rasterio is imported by the functions that read rasters only: ``synthetic_tiles`` also runs on a
borrowed GPU box whose image lacks it (``pipelines/gpu_check.py``)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("GEOCOMPRESS_DATA", REPO.parent / "shared" / "data"))


SAMPLE = "scenes/aerial_korea_0.6m_cogeo.tif"  # 1024 x 1024 RGB uint8, EPSG:3857, 0.6 m


def sample_path() -> Path:
    """The sample scene: from the data folder, else the copy bundled with the package."""
    p = data_dir() / SAMPLE
    return p if p.exists() else REPO / "geocompress" / "data" / "sample_aerial_korea_0.6m.tif"


def mosaic_vrt(path: Path, size: int, source: Path | None = None) -> Path:
    """A ``size`` x ``size`` scene made by repeating a sample scene on a grid, as a GDAL VRT
    (SimpleSource per repetition, the sample's georeferencing extended to the mosaic): a real
    large raster for windowed reads, with no large file on disk."""
    import rasterio

    source = source or sample_path()
    with rasterio.open(source) as src:
        w, h, count, dtype, crs, t = src.width, src.height, src.count, src.dtypes[0], src.crs, src.transform
    gt = ", ".join(repr(v) for v in (t.c, t.a, t.b, t.f, t.d, t.e))
    bands = []
    for b in range(1, count + 1):
        sources = []
        for y in range(0, size, h):
            for x in range(0, size, w):
                sw, sh = min(w, size - x), min(h, size - y)
                sources.append(
                    f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
                    f"<SourceBand>{b}</SourceBand>"
                    f'<SrcRect xOff="0" yOff="0" xSize="{sw}" ySize="{sh}"/>'
                    f'<DstRect xOff="{x}" yOff="{y}" xSize="{sw}" ySize="{sh}"/></SimpleSource>')
        bands.append(f'<VRTRasterBand dataType="{"Byte" if dtype == "uint8" else "UInt16"}" '
                     f'band="{b}">' + "".join(sources) + "</VRTRasterBand>")
    xml = (f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}">'
           f"<SRS>{crs.to_wkt()}</SRS><GeoTransform>{gt}</GeoTransform>" + "".join(bands)
           + "</VRTDataset>")
    path.write_text(xml)
    return path


def synthetic_tiles(n: int, size: int = 256, noise: float = 12.0, vary: bool = False):
    """``n`` RGB uint8 tiles with image-like structure plus noise (speed benchmarks only)."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for i in range(n):
        fx, fy = (7.0 + i % 5, 11.0 + i % 3) if vary else (9.0, 13.0)
        base = 128 + 60 * np.sin(xx / fx) * np.cos(yy / fy)
        out.append(np.clip(base + rng.normal(0, noise, (3, size, size)), 0, 255))
    return np.stack(out).astype(np.uint8)


def sample_tiles(n: int = 16, size: int = 256):
    """Up to ``n`` ``size`` x ``size`` tiles of the sample scene, row by row (C x H x W uint8)."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(sample_path()) as src:
        per_row = src.width // size
        tiles = [src.read(window=Window((i % per_row) * size, (i // per_row) * size, size, size))[:3]
                 for i in range(min(n, per_row * (src.height // size)))]
    return np.stack(tiles)



def geocompress_cmd() -> list[str]:
    """The ``geocompress`` command of this interpreter's environment (a fresh process per call,
    as users run it)."""
    import sys

    exe = Path(sys.executable).with_name("geocompress")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "geocompress.cli"]


AMD_FAMILIES = {23: "Zen / Zen 2", 25: "Zen 3 / Zen 4", 26: "Zen 5"}


def cpu_label() -> str:
    """The CPU every timing is recorded with: model name (with the AMD core generation, which
    cloud VMs hide behind "AMD EPYC"), its widest vector / matrix unit and whether it does
    bfloat16 natively, e.g. ``AMD EPYC (Zen 5): AVX-512 + AVX512-BF16, no AMX``."""
    from pathlib import Path as _Path

    name, family, flags = "unknown CPU", None, set()
    try:
        for line in _Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and name == "unknown CPU":
                name = value
            elif key == "cpu family" and family is None:
                family = int(value)
            elif key == "flags" and not flags:
                flags = set(value.split())
    except (OSError, ValueError):
        pass
    if name.startswith("AMD") and family in AMD_FAMILIES:
        name += f" ({AMD_FAMILIES[family]})"
    if "amx_bf16" in flags:
        unit = "AMX-BF16 + AVX-512"
    elif "avx512f" in flags:
        unit = "AVX-512" + (" + AVX512-BF16, no AMX" if "avx512_bf16" in flags else ", no bf16")
    else:
        unit = "AVX2, no AVX-512, no bf16" if "avx2" in flags else "no AVX2"
    return f"{name}: {unit}"


def total_steps(meta: dict) -> int | None:
    """The training steps in all behind a checkpoint, from its ``meta`` (weights exported before
    lineages were counted carry only their own ``steps``)."""
    return meta.get("total_steps", meta.get("steps"))
