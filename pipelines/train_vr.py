"""The project's one training run: the variable-rate MGSSNet (issue 35), continued by every session.

    .venv/bin/python pipelines/build_dataset.py && .venv/bin/python pipelines/build_dataset.py --set extra
    nohup .venv/bin/python pipelines/train_vr.py [--threads 2] [--hours H] > runs/mgssnet-vr.log 2>&1 &
    .venv/bin/python pipelines/export_wip.py runs/mgssnet-vr      # before the session ends
    .venv/bin/python pipelines/fit_halo_priors.py --checkpoint catalogs/models/wip/mgssnet-vr.pt
    .venv/bin/python benchmarks/vr_rd.py --threads 1              # its measured curve

Resumes ``runs/mgssnet-vr/train_state.pt`` where it exists (same machine, Adam moments and all);
on a new machine it warm-starts from the committed fp16 weights
``catalogs/models/wip/mgssnet-vr.pt`` (lr ramped over 200 steps). Its trunk (:data:`CONFIG`):
q3's N=64 transforms widened function-preservingly to 128 hidden channels (session 22), the
latent to M=192 channels and the scale by three levels below q3's lowest (session 23); hyper
networks N=64, gains initialised around q3's lambda 0.009; every parameter training. Weights
of an earlier trunk (an earlier session's wip file, or the shipped q3 on the very first run)
are widened first (:func:`widened_start`). Why: ``catalogs/models/mgssnet-vr.md``. Ctrl-C or a
kill loses at most ``--checkpoint-every-s``.

Recipe: every level of the model's scale (levels 0-13, lambdas 0.0001125 to 0.72; the top two since
session 28, their gains at 10x lr for 5,000 steps: :data:`BOOST_ABOVE`) at its own lambda
(stratified levels per batch), each level's loss weighted by its running mean ** -1 (the level
balance, :data:`LEVEL_BALANCE`: ``--level-balance``), ``mixed`` quantization, stretch 0.25, batch 8
of 128 x 128 crops, Adam lr 2e-5 (where q3's own schedule ended) with the plateau scheduler, a
moving average of the weights (decay 0.999, since own step 37,180: ``--ema``) that the exports
carry, validation of both every 2000 steps at levels 0 / 3 / 7 / 11 / 13 on 32 + 12 val tiles;
data: the train splits of ``geocompress-rs-v1`` and ``geocompress-rs-extra-v1`` (three times: the
10-60 m satellite imagery users compress most).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geocompress.models.variable_rate import LEVEL_LAMBDAS

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "runs" / "mgssnet-vr"
WIP = REPO / "catalogs" / "models" / "wip"
DATA = [str(REPO / "data" / "geocompress-rs-v1.zarr"), str(REPO / "data" / "geocompress-rs-extra-v1.zarr") + "*3"]
FIRST = REPO / "geocompress" / "weights" / "mgssnet-q3.pt"  # the shipped ladder's q3
NARROW = {"N": 64, "M": 96, "reference_lambda": 0.009}      # q3's widths and lambda
# transforms widened (session 22); latent widened and three levels added below (session 23)
# two levels added above (session 28: lambdas 0.36 and 0.72, the rates of archives, >= 0.9 bpp)
CONFIG = {**NARROW, "M": 192, "transform_N": 128, "levels": 14, "levels_below": 3}
TABLE = len(LEVEL_LAMBDAS)  # the table's levels (between those below and those above)
EMA = 0.999  # decay of the weight average the exports carry (--ema; since own step 37,180)
# the level balance's exponent p (each level's loss weighted by its running mean ** -p): 1 from
# the lineage's step 133,952 (session 29: the ship gate is lost at levels 1-4, where p = 0.5 had
# stood still while its gradient went to the saturated top), 0.5 from 90,379, 1 before
LEVEL_BALANCE = 1.0


def widened_start(src: Path, config: dict, out: Path) -> Path:
    """An earlier trunk of this run widened to ``config``, computing exactly what it did: its
    transforms to ``config["transform_N"]`` hidden channels
    (:func:`geocompress.training.widen.widen_transforms`), its latent to ``config["M"]``
    channels (:func:`~geocompress.training.widen.widen_latent`) and its scale to
    ``config["levels_below"]`` levels below level 0's lambda
    (:func:`~geocompress.training.widen.add_levels_below`) and to ``config["levels"]`` levels in
    all, those beyond the table at its top (:func:`~geocompress.training.widen.add_levels_above`),
    where it has fewer; saved as a warm
    start that keeps the weights' lineage (steps, wall time, lr history).

    Args:
        src: the earlier weights (a variable-rate wip file of an earlier trunk, or the shipped
            fixed-rate q3 on the very first run).
        config: the run's widths (:data:`CONFIG`).
        out: the run folder (the file goes there).

    Returns:
        The warm-start file.
    """
    import torch

    from geocompress.models import build
    from geocompress.training.checkpoints import load_weights
    from geocompress.training.widen import add_levels_above, add_levels_below, widen_latent, widen_transforms

    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    have = {k: v for k, v in ckpt["config"].items()
            if k in ("beta", "heads", "modules", "levels", "levels_below", "M", "transform_N")}
    model = build("mgssnet-vr", **{**have, "N": NARROW["N"], "reference_lambda": NARROW["reference_lambda"]})
    load_weights(model, src)
    before = {"transform_N": model.config.get("transform_N", model.config["N"]), "M": model.config["M"],
              "levels_below": model.levels_below, "levels": model.levels}
    width = int(config.get("transform_N") or config["N"])
    if before["transform_N"] < width:
        model = widen_transforms(model, width)
    if before["M"] < int(config["M"]):
        model = widen_latent(model, int(config["M"]))
    if before["levels_below"] < int(config.get("levels_below") or 0):
        model = add_levels_below(model, int(config["levels_below"]))
    if model.levels < int(config["levels"]):
        model = add_levels_above(model, int(config["levels"]) - model.levels_below - TABLE)
    cfg = dict(model.config)
    ckpt["arch"], ckpt["config"] = "mgssnet-vr", cfg
    ckpt["meta"] = {**ckpt.get("meta", {}), "arch": "mgssnet-vr", "config": cfg,
                    "widened_from": {"path": src.name, **before}}
    ckpt["state_dict"] = {k: v.float() if v.is_floating_point() else v
                          for k, v in model.state_dict().items()}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"widened-{width}-m{cfg['M']}-b{model.levels_below}-l{model.levels}.pt"
    torch.save(ckpt, path)
    return path


def _config_of(path: Path) -> dict:
    """The widths (and reference lambda) of a checkpoint: a file of another trunk is not this
    run's (the first, q6-based trunk was replaced in session 20: catalogs/models/mgssnet-vr.md)."""
    import torch

    cfg = torch.load(path, map_location="cpu", weights_only=True).get("config", {})
    return {k: cfg.get(k) for k in CONFIG}


def is_earlier(config: dict) -> bool:
    """Whether ``config`` (as :func:`_config_of` gives it) is this run's trunk before a widening:
    the same hyper networks and reference lambda, transforms and latent no wider and no more
    levels below level 0 or above the table's top than :data:`CONFIG`'s, and not :data:`CONFIG`
    itself (levels above only where it has all levels below)."""
    if config == CONFIG or config.get("N") != NARROW["N"] or config.get("reference_lambda") != NARROW["reference_lambda"]:
        return False
    width = config.get("transform_N") or config["N"]
    below = config.get("levels_below") or 0
    above = (config.get("levels") or 0) - below - TABLE
    most_above = CONFIG["levels"] - CONFIG["levels_below"] - TABLE if below == CONFIG["levels_below"] else 0
    return (width <= CONFIG["transform_N"] and 0 < (config.get("M") or 0) <= CONFIG["M"]
            and below <= CONFIG["levels_below"] and 0 <= above <= most_above)


def warm_start(config: dict, run: Path) -> Path | None:
    """Where a run without a training state starts: the committed weights where they have this
    run's config, else the committed (or, the very first time, the shipped q3) earlier trunk
    widened to ``config``; None where ``run`` has a state to resume.

    Args:
        config: the run's widths.
        run: the run folder.

    Returns:
        The warm-start file, or None.
    """
    if (run / "train_state.pt").exists():
        return None
    wip = WIP / "mgssnet-vr.pt"
    have = _config_of(wip) if wip.exists() else {}
    if have == config:
        return wip
    return widened_start(wip if is_earlier(have) else FIRST, config, run)


# what computes session 23's new latent channels, their entropy parameters and g_s's reading of
# them, and the gains of its three new levels, learn this many times faster than lr until the
# lineage has this many steps in all: at lr 2e-5 the new channels' encoder weights grew to 1 % of
# the old channels' output in 1,000 steps while the entropy model already charged for them; the
# weights into old outputs keep lr (boosted too, from own step 2,321 to 4,300, they cost every
# level 0.05-0.1 dB: catalogs/models/mgssnet-vr.md)
BOOST = {"latent": 10.0, "gains": 5.0, "until_total": 79_064 + 10_000}
# the gains of session 28's two levels above the table (extrapolated from its top step) learn
# this many times faster than lr for their first 5,000 steps (at lr 2e-5 a log-gain moves ~0.1 in
# 5,000 steps, a level's step is ~0.35): from the lineage's step at the widening
BOOST_ABOVE = {"gains": 10.0, "until_total": 121_403 + 5_000}


def lr_boost(config: dict, run: Path, warm: Path | None) -> tuple[dict, int]:
    """The run's per-entry learning-rate factors (:data:`BOOST`, then :data:`BOOST_ABOVE`) and
    the own step they end at.

    Args:
        config: the run's widths (:data:`CONFIG`).
        run: the run folder (a resumed run counts its inherited steps from its state).
        warm: the warm-start file of a new run (its lineage's steps), else None.

    Returns:
        ``(lr_multipliers, lr_multipliers_until)`` for :func:`geocompress.training.trainer.train`.
    """
    import torch

    from geocompress.training.checkpoints import lineage_totals
    from geocompress.training.widen import latent_entries_added

    if warm is None:
        state = torch.load(run / "train_state.pt", map_location="cpu", weights_only=False)
        total, _ = lineage_totals(state["step"], state["wall_s"], state["hparams"].get("warm_start"))
        inherited = total - int(state["step"])
    else:
        meta = torch.load(warm, map_location="cpu", weights_only=True).get("meta", {})
        inherited = int(meta.get("total_steps") or meta.get("steps") or 0)
    gains = ("log_gain", "log_inverse_gain")
    if inherited >= BOOST["until_total"]:
        above = int(config["levels"]) - int(config.get("levels_below") or 0) - TABLE
        rows = torch.ones(int(config["levels"]), int(config["M"]))
        rows[int(config["levels"]) - above:] = BOOST_ABOVE["gains"]
        return {n: rows.clone() for n in gains}, max(0, BOOST_ABOVE["until_total"] - inherited)
    until = BOOST["until_total"] - inherited
    added = latent_entries_added(config, NARROW["M"], cross=False)
    mult = {n: 1.0 + (BOOST["latent"] - 1.0) * m.float() for n, m in added.items()}
    below = int(config.get("levels_below") or 0)
    for name in gains:  # new channels' columns, new levels' rows
        mult[name][:below] = torch.where(added[name][:below], BOOST["latent"], BOOST["gains"])
    return mult, until


CURVE_BEGIN, CURVE_END = "<!-- curve:begin -->", "<!-- curve:end -->"


def _run_rows(every: int) -> tuple[list[int], list[tuple], int]:
    """This run's validations every ``every`` own steps (and its last): its levels, one row
    per validation (the weight average's in a row of its own) as ``(steps in all, label, wall h,
    {level: "bpp / dB"})``, and the steps it inherited (earlier runs', earlier trunks' and
    q3's, as ``catalogs/models/wip/wip.json`` records them), which its rows' steps in all add to
    its own."""
    import csv
    import json

    rows = list(csv.DictReader((RUN / "log.csv").open()))
    vals = [r for r in rows if r["phase"].startswith("val@")]
    steps = sorted({int(r["step"]) for r in vals})
    levels = sorted({int(r["phase"].removeprefix("val@q")) for r in vals})
    keep = [s for s in steps if s % every == 0] + ([steps[-1]] if steps and steps[-1] % every else [])
    wip = json.loads((WIP / "wip.json").read_text()).get("vr", {})
    inherited = (wip.get("total_steps") or 0) - (wip.get("own_steps") or 0)
    out = []
    for s in keep:
        for phase, tag in (("val@q", ""), ("ema@q", ", weight average")):
            at = {int(r["phase"].removeprefix(phase)): r for r in rows
                  if r["phase"].startswith(phase) and int(r["step"]) == s}
            if at:
                wall = float(next(iter(at.values()))["wall_s"]) / 3600
                out.append((s + inherited, f"{s} (from {inherited}){tag}", f"{wall:.2f}",
                            {q: f"{float(r['bpp']):.3f} / {float(r['psnr']):.2f}" for q, r in at.items()}))
    return levels, out, inherited


def _doc_rows(text: str) -> tuple[list[int], list[tuple]]:
    """The levels and rows (as :func:`_run_rows`) of the table already between the markers."""
    body = text.partition(CURVE_BEGIN)[2].partition(CURVE_END)[0]
    lines = [line.strip() for line in body.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return [], []
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    levels = [int(h.split()[1]) for h in header[3:]]
    rows = []
    for line in lines[2:]:
        c = [x.strip() for x in line.strip("|").split("|")]
        rows.append((int(c[1]), c[0], c[2], dict(zip(levels, c[3:]))))
    return levels, rows


def write_curve(every: int = 2000) -> None:
    """The run's validation at its validation levels every ``every`` steps (and its last), as
    rows of the table between the markers of ``catalogs/models/mgssnet-vr.md``: the rows of
    earlier runs of the lineage (earlier machines') stay, this run's replace those from where it
    started on; each column names its level's lambda ("-" where a row has no such level)."""
    from geocompress.models.variable_rate import scale_lambdas

    doc = REPO / "catalogs" / "models" / "mgssnet-vr.md"
    text = doc.read_text()
    old_levels, old = _doc_rows(text)
    new_levels, new, start = _run_rows(every)
    rows = [r for r in old if r[0] < start] + new
    levels = sorted(set(old_levels) | set(new_levels))
    lambdas = scale_lambdas(CONFIG["levels"], CONFIG["levels_below"])
    lines = [CURVE_BEGIN, "", "| own step | steps in all | wall h | "
             + " | ".join(f"level {q} (lambda {lambdas[q]:g})" for q in levels) + " |",
             "|---|---|---|" + "---|" * len(levels)]
    lines += [f"| {label} | {total} | {wall} | " + " | ".join(cells.get(q, "-") for q in levels) + " |"
              for total, label, wall, cells in rows]
    head, _, rest = text.partition(CURVE_BEGIN)
    doc.write_text(head + "\n".join(lines + ["", CURVE_END]) + rest.partition(CURVE_END)[2])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--hours", type=float, default=None, help="stop (state saved) after this long")
    p.add_argument("--checkpoint-every-s", type=float, default=120.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--freeze", nargs="*", default=[],
                   help="parameter prefixes kept fixed (default none; sessions 20-21 trained with "
                        "g_a. g_s. frozen until that run converged)")
    p.add_argument("--level-balance", type=float, default=LEVEL_BALANCE,
                   help="weight each level's loss by its running mean ** -P (default 1 since the "
                        "lineage's step 133,952: every level's relative improvement alike, for the "
                        "low levels the ship gate measures; 0.5 from step 90,379, which trained the "
                        "synthesis with the top levels' distortion, see catalogs/models/mgssnet-vr.md; "
                        "0: the plain mean, where the top level's loss, ~1000x the lowest's, sets "
                        "everything)")
    p.add_argument("--widen", type=int, default=None, metavar="W",
                   help="a trial with the transforms W hidden channels wide instead of "
                        f"{CONFIG['transform_N']} (item 3's trunk trials; its own folder)")
    p.add_argument("--run", type=Path, default=None,
                   help="the run folder (default runs/mgssnet-vr, or runs/mgssnet-vr-wW with --widen)")
    p.add_argument("--val-every", type=int, default=2000,
                   help="validate the live weights and their average every so many steps (default "
                        "2000 since own step 38,300; 1000 before: the two cost ~15 %% of the steps)")
    p.add_argument("--lr", type=float, default=2e-5,
                   help="learning rate of a new run (a resumed run keeps its schedule); a trunk "
                        "trained to convergence fine-tunes at its last rate (q3 ended at 2e-5): at "
                        "1e-4 its transforms lost 0.1-0.3 dB in 2,000 steps (catalogs/models/mgssnet-vr.md)")
    p.add_argument("--set-lr", type=float, default=None, metavar="LR",
                   help="set the learning rate of a resumed run from here on (the plateau scheduler "
                        "goes on from it); for an lr trial, on a copy of the run's state in its "
                        "own --run folder")
    p.add_argument("--ema", type=float, default=EMA, metavar="DECAY",
                   help="decay of the run's weight average (geocompress.training.ema), validated "
                        "beside the live weights and exported in their place (default 0.999, from "
                        "own step 37,180, 116,244 in all; 0: none): at 2e-5 the live weights scatter "
                        "around their path, and the average validated 0.16 dB over them at level 11 "
                        "after 820 steps, ahead of the same run at lr 1e-5 (catalogs/models/mgssnet-vr.md)")
    p.add_argument("--curve", action="store_true",
                   help="only write the learning-curve table into catalogs/models/mgssnet-vr.md")
    a = p.parse_args(argv)
    if a.curve:
        write_curve()
        return
    from geocompress.training.trainer import train

    run, config = a.run or RUN, dict(CONFIG)
    if a.widen:
        run = a.run or REPO / "runs" / f"mgssnet-vr-w{a.widen}"
        config["transform_N"] = a.widen
    warm = warm_start(config, run)
    boost, until = lr_boost(config, run, warm) if config == CONFIG else ({}, 0)
    if until:
        print(f"entry-wise learning rates ({', '.join(sorted(boost))}: up to "
              f"{max(float(v.max()) for v in boost.values()):g}x) until own step {until}", flush=True)
    r = train("mgssnet-vr", config, DATA, 0.0, run, steps=10 ** 7, crop=128, batch=8,
              lr=a.lr, quantization="mixed", stretch=0.25, threads=a.threads, warm_start=warm,
              warmup_steps=200, val_every=a.val_every, val_limit=32, device=a.device,
              checkpoint_every_s=a.checkpoint_every_s, export=False, freeze=tuple(a.freeze),
              level_balance=a.level_balance, lr_multipliers=boost or None, lr_multipliers_until=until,
              time_budget_s=a.hours * 3600 if a.hours else None, lr_override=a.set_lr, ema=a.ema,
              dataset_name="geocompress-rs-v1+geocompress-rs-extra-v1*3")
    print(f"stopped at step {r.step}; last validation {r.val}")


if __name__ == "__main__":
    main()
