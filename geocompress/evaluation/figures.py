"""Report figures: RD curves, the visual comparison near one rate, confusion matrices.

Matplotlib with the Agg backend (files only, no display), so reports build on headless machines.
Classical codecs are drawn dashed with hollow markers and learned ones solid, so the two families
read apart at a glance, as in the paper's Figs. 8 - 9.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["choose_crops", "plot_confusion", "plot_confusions", "plot_rd", "plot_visual"]

_MARKERS = "osD^v<>phX*"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rd(curves: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path,
            ylabel: str, title: str = "", dashed: Sequence[str] = (), xlabel: str = "bpp") -> Path:
    """RD curves, one line per codec (the paper's Figs. 8 - 9, 12 - 14).

    Args:
        curves: label -> (bpp, quality) arrays; empty curves are skipped.
        path: the PNG to write.
        ylabel: the quality axis' label.
        title: the figure's title (wrapped).
        dashed: labels of classical codecs, drawn dashed with open markers so the learned ones
            stand out.
        xlabel: the rate axis' label.

    Returns:
        ``path``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for k, (label, (x, y)) in enumerate(curves.items()):
        if len(x) == 0:
            continue
        classical = label in dashed
        ax.plot(x, y, linestyle="--" if classical else "-", marker=_MARKERS[k % len(_MARKERS)],
                markersize=4, markerfacecolor="none" if classical else None, linewidth=1.4,
                label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def choose_crops(img: np.ndarray, size: int, n: int = 2) -> list[tuple[int, int]]:
    """Top-left corners of ``n`` detail-rich crops: the highest-gradient ``size`` window in the
    upper-left and in the lower-right half (the paper zooms on one region in each, Figs. 10-11),
    so the crops show where codecs differ: texture and edges, not flat areas.

    Args:
        img: H x W x C or H x W image.
        size: the crop's side (clipped to the image).
        n: how many crops, 1 or 2.

    Returns:
        ``(row, col)`` of each crop's top-left corner.
    """
    a = np.asarray(img, dtype=np.float64)
    g = a.mean(axis=2) if a.ndim == 3 else a
    energy = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1, :]
    h, w = energy.shape
    size = min(size, h, w)
    ii = np.pad(energy, ((1, 0), (1, 0))).cumsum(0).cumsum(1)  # integral image

    def best(r0: int, r1: int, c0: int, c1: int) -> tuple[int, int]:
        top, score = (r0, c0), -1.0
        step = max(1, size // 8)
        for r in range(r0, max(r0, r1 - size) + 1, step):
            for c in range(c0, max(c0, c1 - size) + 1, step):
                s = ii[r + size, c + size] - ii[r, c + size] - ii[r + size, c] + ii[r, c]
                if s > score:
                    top, score = (r, c), s
        return top

    regions = [(0, h // 2 + size // 2, 0, w // 2 + size // 2),
               (h // 2 - size // 2, h, w // 2 - size // 2, w)]
    return [best(max(0, r0), min(h, r1), max(0, c0), min(w, c1)) for r0, r1, c0, c1 in regions[:n]]


def _display(x: np.ndarray, peak: float) -> np.ndarray:
    """H x W x C in [0, 1] for imshow (1 band shown grey)."""
    a = np.asarray(x, dtype=np.float64) / peak
    a = np.clip(a, 0, 1)
    return a[:, :, 0] if a.shape[2] == 1 else a[:, :, :3]


def plot_visual(original: np.ndarray, panels: Sequence[dict[str, Any]], path: str | Path,
                peak: float = 255.0, crop: int = 64, title: str = "") -> Path:
    """The original and every codec's reconstruction with two zoomed crops each (the paper's Figs.
    10 - 11).

    Args:
        original: H x W x C.
        panels: dicts with ``label``, ``image`` (H x W x C) and optional ``bpp``, ``psnr_paper``
            (else ``psnr``), ``ms_ssim_db`` for the caption (what the paper's captions give).
        path: the PNG to write.
        peak: the samples' full scale for display.
        crop: the crops' side in pixels.
        title: the figure's title.

    Returns:
        ``path``.
    """
    plt = _plt()
    from matplotlib.patches import Rectangle

    crops = choose_crops(original, crop)
    items = [{"label": "Original", "image": original}] + list(panels)
    ncol = min(5, len(items))
    nrow = math.ceil(len(items) / ncol)
    colors = ("#ff3030", "#30a0ff")
    # per panel: caption, image, the two crops, a gap (rows of a grid, so nothing overlaps)
    ratios = [0.55, 2.0, 1.0, 0.2] * nrow
    fig = plt.figure(figsize=(2.8 * ncol, 1.0 + 3.75 * nrow * 2.8 / 3.0), dpi=110)
    gs = fig.add_gridspec(4 * nrow, ncol, height_ratios=ratios, left=0.01, right=0.99,
                          top=0.97 if not title else 0.93, bottom=0.01, hspace=0.04, wspace=0.06)
    for k, it in enumerate(items):
        r, c = divmod(k, ncol)
        cap_ax = fig.add_subplot(gs[4 * r, c])
        cap_ax.axis("off")
        cap = it["label"]
        if "bpp" in it:
            cap += (f"\nbpp {it['bpp']:.4f}  PSNR {it.get('psnr_paper', it.get('psnr', float('nan'))):.2f}"
                    f"\nMS-SSIM {it.get('ms_ssim_db', float('nan')):.2f} dB")
        cap_ax.text(0.5, 0.0, cap, ha="center", va="bottom", fontsize=7, transform=cap_ax.transAxes)
        ax = fig.add_subplot(gs[4 * r + 1, c])
        img = _display(it["image"], peak)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1,
                  interpolation="nearest")
        for (y, x), col in zip(crops, colors):
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), crop, crop, fill=False, edgecolor=col,
                                   linewidth=1.2))
        ax.axis("off")
        for j, ((y, x), col) in enumerate(zip(crops, colors)):
            sub = fig.add_subplot(gs[4 * r + 2, c].subgridspec(1, 2, wspace=0.05)[0, j])
            sub.imshow(img[y:y + crop, x:x + crop], cmap="gray" if img.ndim == 2 else None,
                       vmin=0, vmax=1, interpolation="nearest")
            for s in sub.spines.values():
                s.set_edgecolor(col)
                s.set_linewidth(1.5)
            sub.set_xticks([])
            sub.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _confusion_axes(ax, cm: np.ndarray, classes: Sequence[str], title: str, annotate: bool) -> None:
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    n = len(classes)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(classes, rotation=90, fontsize=6)
    ax.set_yticklabels(classes, fontsize=6)
    ax.set_xlabel("predicted", fontsize=7)
    ax.set_ylabel("true", fontsize=7)
    ax.set_title(title, fontsize=8)
    if annotate:
        for i in range(n):
            for j in range(n):
                if norm[i, j] > 0:
                    ax.text(j, i, f"{norm[i, j]:.2f}".lstrip("0") if norm[i, j] < 1 else "1",
                            ha="center", va="center", fontsize=4.5,
                            color="white" if norm[i, j] > 0.5 else "black")


def plot_confusion(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """A row-normalised confusion matrix (rows: true class) as a PNG, annotated with the shares.

    Args:
        cm: counts, rows = true class (:func:`~.classifier.confusion_matrix`).
        classes: class names in the matrix' order.
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``path``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=120)
    _confusion_axes(ax, cm, classes, title, annotate=True)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusions(cms: dict[str, np.ndarray], classes: Sequence[str], path: str | Path) -> Path:
    """Several confusion matrices side by side, unannotated (the paper's Fig. 16): codecs compared
    at a glance.

    Args:
        cms: title -> counts.
        classes: class names in the matrices' order.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    plt = _plt()
    n = len(cms)
    ncol = min(3, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 4.6 * nrow), dpi=110, squeeze=False)
    for ax, (label, cm) in zip(axes.ravel(), cms.items()):
        _confusion_axes(ax, cm, classes, label, annotate=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
