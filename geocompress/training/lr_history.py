"""The main learning rate a run's steps actually ran at, read back from its CSV log.

A run's recipe lr says little once it has been resumed over several sessions: each session may
override it, the plateau scheduler halves it, and a warm start from weights without Adam moments
ramps it up first. The catalog records these segments so that a checkpoint says how it was made,
including the steps it inherited through warm starts (:func:`inherited`).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["lr_segments", "read_lr_segments", "describe", "inherited"]


def lr_segments(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Segments ``{"from_step", "to_step", "lr"}`` of constant lr over the log's train rows, in
    step order. The trainer's warm-up sets lr = target * step / warmup_steps, so consecutive steps
    whose lr rises in proportion to the step become one segment with ``"ramp_from"``, its first lr.

    Args:
        rows: the trainer log's rows (``phase``, ``step``, ``lr``).

    Returns:
        The segments.
    """
    segs: list[dict[str, Any]] = []
    for r in rows:
        if r.get("phase") != "train" or r.get("lr") in ("", None):
            continue
        step, lr = int(r["step"]), float(r["lr"])
        last = segs[-1] if segs else None
        if last is not None and "ramp_from" not in last and math.isclose(lr, last["lr"], rel_tol=1e-6):
            last["to_step"] = step
        elif (last is not None and lr > last["lr"] and step == last["to_step"] + 1
              and math.isclose(lr / step, last["lr"] / last["to_step"], rel_tol=1e-6)):
            last.setdefault("ramp_from", last["lr"])
            last.update(to_step=step, lr=lr)
        else:
            segs.append({"from_step": step, "to_step": step, "lr": lr})
    return segs


def read_lr_segments(log_path: str | os.PathLike) -> list[dict[str, Any]]:
    """``lr_segments`` of a trainer log file; an empty list when the run has no log.

    Args:
        log_path: the run's ``log.csv``.

    Returns:
        The segments.
    """
    path = Path(log_path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return lr_segments(csv.DictReader(f))


def inherited(parent_own: Iterable[Mapping[str, Any]], parent_steps: int,
              parent_lineage: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The whole known schedule behind a warm start's weights, numbered over the chain's steps:
    the parent's own inherited schedule, then the parent's own segments (up to ``parent_steps``,
    where it was when the child started) shifted past the steps the parent inherited. A link
    whose schedule was never recorded leaves a gap at the start (``describe`` then starts later
    than step 1).

    Args:
        parent_own: the parent run's own segments.
        parent_steps: the parent's step when the child started from it.
        parent_lineage: the parent's lineage record (its inherited schedule), if any.

    Returns:
        The segments, numbered over the chain.
    """
    lineage = parent_lineage or {}
    offset = int(lineage.get("steps") or 0)
    out = [dict(s) for s in lineage.get("lr_schedule") or []]
    for s in parent_own:
        if s["from_step"] > parent_steps:
            break
        out.append({**s, "from_step": s["from_step"] + offset,
                    "to_step": min(s["to_step"], parent_steps) + offset})
    return out


def describe(segs: Iterable[Mapping[str, Any]]) -> str:
    """One line for a catalog, e.g. ``1-200: ramp to 0.00025; 201-2010: 0.00025; 2011-2363: 0.0001``.

    Args:
        segs: segments from :func:`lr_segments` or :func:`inherited`.

    Returns:
        The line.
    """
    parts = []
    for s in segs:
        span = f"{s['from_step']}-{s['to_step']}" if s["to_step"] > s["from_step"] else f"{s['from_step']}"
        lr = f"ramp to {s['lr']:.3g}" if "ramp_from" in s else f"{s['lr']:.3g}"
        parts.append(f"{span}: {lr}")
    return "; ".join(parts)
