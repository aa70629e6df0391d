"""Export training runs in progress as fp16 weights under ``catalogs/models/wip/``, so that a
session on another machine can continue them (``geocompress train ... --warm-start FILE
--warmup-steps 200``). Weights only, no optimizer state; safe while the run trains (its state is
written atomically). What each file is and its curve: ``catalogs/models/wip/README.md``.

    .venv/bin/python pipelines/export_wip.py runs/mgssnet-hi/q6 runs/mgssnet-hi/q5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from geocompress.training.checkpoints import STATE, export_state

REPO = Path(__file__).resolve().parents[1]
WIP = REPO / "catalogs" / "models" / "wip"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run folders holding train_state.pt")
    p.add_argument("--out", type=Path, default=WIP)
    a = p.parse_args(argv)
    for run in a.runs:
        state = torch.load(run / STATE, map_location="cpu", weights_only=False)
        q = int(state.get("quality") or 0)
        if not q:
            raise SystemExit(f"{run}: the run records no quality index (train with --quality N)")
        a.out.mkdir(parents=True, exist_ok=True)
        out = a.out / f"{state['arch']}-q{q}.pt"
        digest, meta, _ = export_state(run / STATE, out, quality=q)
        print(f"{run} -> {out.relative_to(REPO) if out.is_relative_to(REPO) else out}: own steps "
              f"{meta['steps']}, in all {meta.get('total_steps')}, lambda {meta['lambda']}, "
              f"{out.stat().st_size / 1e6:.1f} MB, digest {digest[:12]}")


if __name__ == "__main__":
    main()
