"""The main job end to end: compress a scene, rebuild it, and measure what it cost and kept."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from .. import metrics
from ..codec import CodecChoice, WeightsError
from ._options import fold
from .cluster import ClusterChoice
from .compress import SCENE_CODEC, TilingChoice, compress_scene
from .info import store_info
from .mosaic import decompress_scene


def roundtrip(scene: str | Path, out_dir: str | Path, codec: CodecChoice | None = None,
              cluster: ClusterChoice | None = None, *, overwrite: bool = True,
              **options: Any) -> dict[str, Any]:
    """Compress ``scene`` into ``out_dir/<name>.zarr``, decode it to ``<name>.tif``, and measure
    what it cost and kept (the CLI's ``demo``).

    Quality is measured over the pixels the source marks valid. Without weights for the default
    codec (no quality or checkpoint asked for), the run falls back to untrained weights, with a
    warning, so that the pipeline still shows.

    Args:
        scene: a GeoTIFF.
        out_dir: the folder for the store, the reconstruction and a side-by-side PNG; created
            if missing.
        codec: the codec (default :data:`~.compress.SCENE_CODEC`); the decode uses its
            checkpoint, precision and batch size.
        cluster: where both runs' tasks go, and progress.
        overwrite: replace the store and the reconstruction if they exist.
        **options: single fields of the codec, tiling or cluster choice
            (:func:`~geocompress.scene.compress_scene`).

    Returns:
        bpp, PSNR (fixed peak and eq. 10), MS-SSIM (and in dB), compression ratios, wall times,
        the paths written, and whether the georeferencing survived.

    Raises:
        WeightsError: the asked quality's or checkpoint's weights are missing or damaged.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = Path(scene).stem
    store, tif = out_dir / f"{name}.zarr", out_dir / f"{name}.tif"
    codec, tiling, cluster = fold("roundtrip", options, codec or SCENE_CODEC, TilingChoice(),
                                  cluster or ClusterChoice())
    kw = dict(tiling=tiling, cluster=cluster, overwrite=overwrite)
    t0 = time.perf_counter()
    try:
        result = compress_scene(scene, store, codec, **kw)
    except WeightsError as e:
        if codec.checkpoint or codec.quality:
            raise
        warnings.warn(f"{e}. Running the demo with UNTRAINED weights: the pipeline works, the "
                      f"pictures will not look like the source.", stacklevel=2)
        codec = codec.replace(pretrained=False, config={"N": 64, "M": 96})
        result = compress_scene(scene, store, codec, **kw)
    t1 = time.perf_counter()
    decompress_scene(store, tif, codec=codec, cluster=cluster, overwrite=overwrite)
    t2 = time.perf_counter()
    with rasterio.open(scene) as a, rasterio.open(tif) as b:
        x, y, valid = a.read(), b.read(), a.dataset_mask() > 0
        same_geo = (a.crs == b.crs and a.transform == b.transform and a.shape == b.shape
                    and a.count == b.count and a.dtypes == b.dtypes)
    bits = result.bits
    peak = float(2 ** bits - 1)
    xv, yv = x[:, valid][:, None, :], y[:, valid][:, None, :]
    info = store_info(store)
    report = {
        "scene": str(scene), "store": str(store), "reconstruction": str(tif),
        "size": f"{x.shape[2]} x {x.shape[1]} px, {x.shape[0]} band(s) {x.dtype}",
        "tiles_written": result.written, "tiles_dropped": result.dropped_nodata + result.dropped_constant,
        "bpp": 8 * info["tile_bytes"] / max(int(valid.sum()), 1),
        "psnr_db": metrics.psnr(xv, yv, peak=peak),
        "psnr_eq10_db": metrics.psnr_paper(xv, yv),
        "ms_ssim": metrics.ms_ssim(np.where(valid, x, 0), np.where(valid, y, 0), peak=peak)
        if min(x.shape[1:]) > 160 else None,
        "ratio_raw": info["ratio_raw"], "ratio_source_file": info["ratio_source_file"],
        "georeferencing_preserved": bool(same_geo),
        "compress_s": t1 - t0, "decompress_s": t2 - t1, "model": info["model"],
    }
    if report["ms_ssim"] is None:  # said, not a bare nan
        report["ms_ssim"] = ("n/a: the scene is under 161 px on a side, too small for MS-SSIM's "
                             "five scales")
        report["ms_ssim_db"] = report["ms_ssim"]
    else:
        report["ms_ssim_db"] = metrics.to_db(report["ms_ssim"])
    report["figure"] = str(side_by_side(x, y, out_dir / f"{name}_crop.png", bits, report))
    return report


def side_by_side(x: np.ndarray, y: np.ndarray, path: Path, bits: int, report: dict) -> Path:
    """Original and reconstruction of a 256 x 256 crop from the scene centre, side by side.

    Args:
        x: the source, C x H x W.
        y: the reconstruction, same shape.
        path: the PNG to write.
        bits: the scene's bit depth (above 8, both are stretched to the source's 1-99 %
            percentiles, so that 12-bit data shows).
        report: :func:`roundtrip`'s measurements (scene, bpp and PSNR go in the titles).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c, h, w = x.shape
    s = min(256, h, w)
    r0, c0 = (h - s) // 2, (w - s) // 2

    def show(a: np.ndarray) -> np.ndarray:
        a = a[:3, r0:r0 + s, c0:c0 + s].astype(np.float64)
        lo, hi = np.percentile(x[:3], [1, 99]) if bits > 8 else (0, 255)
        a = np.clip((a - lo) / max(hi - lo, 1), 0, 1)
        return a[0] if a.shape[0] < 3 else a.transpose(1, 2, 0)

    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, img, title in zip(axes, (show(x), show(y)), (
            "original", f"geocompress  {report['bpp']:.3f} bpp, {report['psnr_db']:.2f} dB")):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{Path(report['scene']).name}: centre crop {s} x {s} px")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
