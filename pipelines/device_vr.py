"""The project's one training run, the variable-rate MGSSNet (``pipelines/train_vr.py``), continued
on a borrowed GPU (``bash pipelines/device_train.sh run MIN``), and the result adopted here.

    python3 pipelines/device_vr.py --minutes 5 --out "$OUT"        # on the GPU box (device_train.sh run)
    .venv/bin/python pipelines/device_vr.py --adopt <files_at>      # here: the GPU's weights become the wip

On the device it warm-starts from the committed (or freshly exported, uncommitted: the working tree
travels) fp16 weights ``catalogs/models/wip/mgssnet-vr.pt`` (no Adam moments: lr ramped over 200
steps, as ``train_vr.py`` does on a new machine), and trains with ``train_vr.py``'s recipe: its
CONFIG, every level at its own lambda, ``mixed`` quantization, stretch 0.25, 128 x 128 crops, Adam
lr 2e-5 with the plateau scheduler, the weight average (decay ``EMA``) that the export carries,
every parameter training (``--freeze`` keeps some fixed),
validation every 1000 steps at the trainer's validation levels; the data are the device packs of the same two stores, the extra one three
times (``device_train.sh prepare``). What differs on CUDA: the trainer's ``auto`` precision is
bf16 autocast, and the batch is 32 (the GPU is idle at 8; ``--batch``). After ``--minutes`` (or
``--steps``) it exports an fp16 checkpoint into ``--out`` exactly as ``pipelines/export_wip.py``
does (``mgssnet-vr.pt``, meta with its own steps and the lineage's totals) and a note
``mgssnet-vr.json`` (the wip.json entry, plus the steps of this call, its speed and last validation).

``--adopt DIR`` copies ``DIR/mgssnet-vr.pt`` to ``catalogs/models/wip/`` and its entry into
``wip.json``. Then the CPU run must start again from it, or the session's own export would
overwrite the GPU's steps: stop ``train_vr.py``, move ``runs/mgssnet-vr`` aside, start
``train_vr.py`` again (no train_state.pt: it warm-starts from the adopted wip weights).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "pipelines")]

from train_vr import (CONFIG, EMA, LEVEL_BALANCE, WIP, _config_of, is_earlier,  # noqa: E402
                      widened_start)

from geocompress.codec.weights import drop_stale_halo_prior  # noqa: E402

PACKS = [REPO / ".devpack" / "rs-v1-trainval.npz", REPO / ".devpack" / "rs-extra-v1-trainval.npz"]
FREEZE: tuple[str, ...] = ()  # train_vr.py's default (every parameter trains)
LR = 2e-5  # train_vr.py's default
NAME = "mgssnet-vr"


def default_data() -> list[str]:
    """The device packs (rs-v1 once, rs-extra three times, as train_vr.py's DATA), else the stores."""
    if all(p.exists() for p in PACKS):
        return [str(PACKS[0]), f"{PACKS[1]}*3"]
    from train_vr import DATA

    return list(DATA)


def entry(out: Path, digest: str, meta: dict, state: dict) -> dict:
    """The ``wip.json`` entry ``export_wip.py`` writes for a variable-rate run."""
    return {"file": out.name, "digest": digest, "lambda": meta["lambda"], "config": state["config"],
            "own_steps": meta["steps"], "total_steps": meta.get("total_steps"),
            "wall_s": meta.get("wall_s"), "hardware": meta.get("hardware"),
            "level_lambdas": meta.get("level_lambdas"), "ema": meta.get("ema")}


def train_and_export(a: argparse.Namespace) -> dict:
    import torch

    from geocompress.training.checkpoints import STATE, export_state
    from geocompress.training.trainer import resolve_device, train

    dev = resolve_device(a.device)
    batch = a.batch or (32 if dev.type == "cuda" else 8)
    warm = Path(a.warm)
    have = _config_of(warm)
    if have != CONFIG and not (a.run / STATE).exists():
        if not is_earlier(have):
            raise SystemExit(f"{warm} is not this run's trunk {CONFIG}: {have}")
        warm = widened_start(warm, CONFIG, a.run)  # an earlier trunk, widened
    data = a.data or default_data()
    resumed = (a.run / STATE).exists()
    print(f"[{time.strftime('%H:%M:%S')}] {NAME} on {dev}: warm start {warm if not resumed else '(resumed)'}, "
          f"data {data}, batch {batch}, {a.minutes} min" + (f" / {a.steps} steps" if a.steps else ""),
          flush=True)
    t = time.time()
    r = train(NAME, CONFIG, data, 0.0, a.run, steps=10 ** 7, crop=128, batch=batch, lr=LR,
              level_balance=LEVEL_BALANCE, ema=EMA,
              quantization="mixed", stretch=0.25, threads=a.threads, warm_start=warm,
              warmup_steps=200, val_every=a.val_every, val_limit=32, device=str(dev),
              checkpoint_every_s=120.0, export=False, freeze=tuple(a.freeze),
              time_budget_s=a.minutes * 60 if a.minutes else None, halt_after=a.steps,
              progress=a.progress, dataset_name="geocompress-rs-v1+geocompress-rs-extra-v1*3 (device packs, "
              "JPEG q85)" if data[0].endswith(".npz") else "geocompress-rs-v1+geocompress-rs-extra-v1*3")
    wall = time.time() - t
    a.out.mkdir(parents=True, exist_ok=True)
    out = a.out / f"{NAME}.pt"
    digest, meta, _ = export_state(a.run / STATE, out, quality=0)
    state = torch.load(a.run / STATE, map_location="cpu", weights_only=False)
    note = {"vr": entry(out, digest, meta, state),
            "this_call": {"steps": len(r.losses), "wall_s": round(wall, 1),
                          "steps_per_s": round(len(r.losses) / wall, 2) if wall else None,
                          "batch": batch, "device": str(dev), "precision": "auto (bf16 autocast on CUDA)",
                          "freeze": list(a.freeze), "warm_start": str(warm.relative_to(REPO)
                                                                       if warm.is_relative_to(REPO) else warm),
                          "data": [str(Path(d.split("*")[0]).name) + ("*" + d.split("*")[1] if "*" in d else "")
                                   for d in data],
                          "last_loss": round(r.losses[-1], 4) if r.losses else None,
                          "last_val": r.val}}
    (a.out / f"{NAME}.json").write_text(json.dumps(note, indent=1, default=float) + "\n")
    print(f"[{time.strftime('%H:%M:%S')}] {len(r.losses)} steps in {wall:.0f} s "
          f"({note['this_call']['steps_per_s']} steps/s, batch {batch}); -> {out}: own steps "
          f"{meta['steps']}, in all {meta.get('total_steps')}, digest {digest[:12]}", flush=True)
    return note


def adopt(folder: Path, wip: Path = WIP) -> None:
    """The device's export becomes the run's wip weights (file and wip.json entry)."""
    src = folder / f"{NAME}.pt"
    note = json.loads((folder / f"{NAME}.json").read_text())
    if _config_of(src) != CONFIG:
        raise SystemExit(f"{src} is not this run's trunk {CONFIG}")
    shutil.copyfile(src, wip / f"{NAME}.pt")
    prior = drop_stale_halo_prior(wip / f"{NAME}.pt")
    if prior is not None:
        print(f"removed {prior.name} (it refits the weights replaced): refit it with "
              f"`.venv/bin/python pipelines/fit_halo_priors.py --checkpoint {wip / (NAME + '.pt')}`")
    record = wip / "wip.json"
    results = json.loads(record.read_text()) if record.exists() else {}
    results["vr"] = note["vr"]
    record.write_text(json.dumps(results, indent=1) + "\n")
    v = note["vr"]
    print(f"{wip / (NAME + '.pt')}: {v['total_steps']} steps in all ({note['this_call']['steps']} on "
          f"{v['hardware']}); now stop train_vr.py, move runs/mgssnet-vr aside and start it again")


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="training wall time (state saved after)")
    p.add_argument("--steps", type=int, default=None, help="stop after so many steps (smoke runs)")
    p.add_argument("--out", type=Path, default=None, help="export folder (the device's $OUT)")
    p.add_argument("--run", type=Path, default=Path("/tmp/runs") / NAME, help="the run's folder")
    p.add_argument("--warm", type=Path, default=WIP / f"{NAME}.pt")
    p.add_argument("--data", nargs="+", default=None,
                   help="tile stores / packs (PATH*K repeats); default: .devpack packs, else train_vr's stores")
    p.add_argument("--batch", type=int, default=None, help="default 32 on CUDA, 8 elsewhere")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--freeze", nargs="*", default=list(FREEZE))
    p.add_argument("--progress", action="store_true", help="tqdm bar")
    p.add_argument("--adopt", type=Path, metavar="DIR", help="here: DIR's export becomes the wip weights")
    a = p.parse_args(argv)
    if a.adopt:
        adopt(a.adopt)
        return None
    if a.out is None:
        p.error("--out is required (the device's $OUT)")
    return train_and_export(a)


if __name__ == "__main__":
    main()
