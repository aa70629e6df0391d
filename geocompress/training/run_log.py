"""A training run's log: the CSV written row by row (resumable), and its curves as a figure."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from geocompress.atomic import atomic_path

__all__ = ["LOG_FIELDS", "RunLog", "plot_log"]

LOG_FIELDS = ["step", "epoch", "phase", "loss", "bpp", "mse", "psnr", "aux_loss", "lr", "wall_s"]


class RunLog:
    """A run's CSV log (:data:`LOG_FIELDS`), written row by row so that a killed run keeps it.

    Args:
        path: the ``log.csv`` (rewritten on open).
        resume_step: the step a resumed run continues from: the rows up to it are kept, those
            after it dropped (they belong to steps whose state was never saved); None starts an
            empty log.
    """

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)
        self.rows = rows

    def write(self, row: dict[str, Any]) -> None:
        """Append one row (its missing columns empty, unknown keys dropped) to the file at once,
        so that a killed run keeps every row it logged.

        Args:
            row: column values by name (:data:`LOG_FIELDS`).
        """
        row = {k: row.get(k, "") for k in LOG_FIELDS}
        self.rows.append(row)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, LOG_FIELDS).writerow(row)


def plot_log(rows: list[dict[str, Any]], out: Path, title: str) -> None:
    """Draw loss, bpp and PSNR against step (train: moving average over 50 steps; val and the
    weight average's validation, if any: points).

    Args:
        rows: the log's rows.
        out: the figure to write (atomically; its extension picks the format).
        title: the figure's title (the run's recipe).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key in zip(axes, ("loss", "bpp", "psnr")):
        for phase, style in (("train", "-"), ("val", "o-"), ("ema", "s--")):
            pts = [(int(r["step"]), float(r[key])) for r in rows if r["phase"] == phase and r[key] != ""]
            if not pts:
                continue
            xs, ys = zip(*pts)
            if phase == "train" and len(ys) > 1:
                k = min(50, len(ys))
                ys = [sum(ys[max(0, i - k + 1):i + 1]) / len(ys[max(0, i - k + 1):i + 1])
                      for i in range(len(ys))]
            ax.plot(xs, ys, style, label=phase, ms=3, lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel({"psnr": "PSNR (dB)", "bpp": "bpp (estimate)", "loss": "loss"}[key])
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(out, ".tmp" + out.suffix) as tmp:  # savefig picks the format by extension
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
