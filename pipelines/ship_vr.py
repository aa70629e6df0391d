"""Ship the variable-rate MGSSNet (issue 35): its weights and halo prior into the package, by name.

    .venv/bin/python pipelines/ship_vr.py [--checkpoint catalogs/models/wip/mgssnet-vr.pt]
        [--rd catalogs/models/mgssnet-vr-rd.json] [--force]

Copies the run's fp16 weights to ``geocompress/weights/mgssnet-vr-<digest>.pt`` and its halo prior
(the ``<stem>-halo.pt`` beside them, which must refit these very weights) to
``mgssnet-vr-<digest>-halo-<prior digest>.pt`` (12 hex digits each), and writes their entry into
``geocompress/weights/index.json``: one file for every level of the continuous scale (``levels``,
``level_lambdas``, the ``default`` level), the digests a store records, and the test-split curve
``benchmarks/vr_rd.py`` measured on these very weights (``--rd``; its digest must be theirs).
``geocompress.load_codec("mgssnet-vr", quality=7.5)`` and ``geocompress compress --arch
mgssnet-vr`` then load them without a checkpoint path. Weights it replaces ship on, listed under
``superseded`` (a prior replaced for the same weights under ``halo_prior_superseded``), so that
stores written with them keep decoding.

Refused unless the measured curve passes issue 35's gate: BD-rate against the fixed-rate ladder
q1-q4 over the ladder's span at most :data:`GATE`'s ``ladder_bd_rate`` and a top level at or
above its ``top_bpp``, and unless a halo prior beside the weights refits them (without one the
default would code at halo 0: seams); ``--force`` ships anyway, saying what failed. Making it the package's
default codec is one line once the gate passes: ``DEFAULT_ARCH`` in ``geocompress/shipped.py``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "geocompress" / "weights"
WIP = REPO / "catalogs" / "models" / "wip" / "mgssnet-vr.pt"
RD = REPO / "catalogs" / "models" / "mgssnet-vr-rd.json"
ARCH = "mgssnet-vr"
# issue 35: ship as the default once the test-split curve is within 2 % of the ladder's bits over
# the ladder's span and reaches 0.9 bpp
GATE = {"ladder_bd_rate": 2.0, "top_bpp": 0.9}


def gate(rd: dict) -> list[str]:
    """What the measured curve fails of :data:`GATE` (empty: it passes).

    Args:
        rd: ``benchmarks/vr_rd.py``'s json.

    Returns:
        One line per failed condition (a BD-rate over less than the ladder's whole span, or not
        a number, fails).

    Raises:
        SystemExit: the json holds no test-split curve.
    """
    test = rd.get("sets", {}).get("rs-v1")
    if not test or not test.get("curve"):
        raise SystemExit("the measured curve has no rs-v1 test split: run benchmarks/vr_rd.py")
    failed = []
    ladder = test.get("bd", {}).get("ladder", {}).get("psnr", {})
    rate = ladder.get("bd_rate_percent")
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate > GATE["ladder_bd_rate"]:
        failed.append(f"BD-rate against the ladder {rate} % (at most {GATE['ladder_bd_rate']} %)")
    span = [row[1] for row in test.get("ladder_curve", [])]
    shared = ladder.get("shared_bpp") or [math.inf, -math.inf]
    if not span or shared[0] > min(span) + 1e-9 or shared[1] < max(span) - 1e-9:
        failed.append(f"the BD-rate covers bpp {shared}, not the ladder's span "
                      f"{[min(span), max(span)] if span else 'unknown'}")
    top = max(row[1] for row in test["curve"])
    if top < GATE["top_bpp"]:
        failed.append(f"top level at {top:.3f} bpp (at least {GATE['top_bpp']})")
    return failed


def index_entry(model, rd: dict, digest: str, prior_digest: str | None) -> dict:
    """The weights-index entry of the variable-rate model (what :func:`geocompress.codec.weights.
    shipped_path` reads), with the measured curve beside it.

    Args:
        model: the weights shipped, as loaded (their ``config`` and ``meta``).
        rd: their measured curve (``benchmarks/vr_rd.py``'s json).
        digest: their digest.
        prior_digest: the combined digest of their halo prior, or None.

    Returns:
        The entry.
    """
    meta, test = getattr(model, "meta", {}), rd["sets"]["rs-v1"]
    entry = {"file": f"{ARCH}-{digest[:12]}.pt", "digest": digest, "levels": model.levels,
             "level_lambdas": meta.get("level_lambdas"), "default": float(meta.get("default_quality", 4.0)),
             "steps": meta.get("total_steps") or meta.get("steps"),
             "curve_test": [[row[0], round(row[1], 4), round(row[2], 3)] for row in test["curve"]],
             "bd_rate_vs_ladder_percent": test.get("bd", {}).get("ladder", {}).get("psnr", {}).get("bd_rate_percent"),
             "measured_by": "benchmarks/vr_rd.py", "cpu": rd.get("cpu")}
    if prior_digest is not None:
        entry["halo_prior"] = {"file": f"{ARCH}-{digest[:12]}-halo-{prior_digest[:12]}.pt",
                               "digest": prior_digest}
    return entry


def superseded(old: dict | None, entry: dict) -> dict:
    """What ``entry`` keeps of ``old`` (the entry it replaces): earlier weights under
    ``superseded``, and, where the weights stay the same, their earlier halo priors under
    ``halo_prior_superseded``. Their files stay in the package (each shipped file is named by
    its digests), so that the stores written with them keep decoding, at every level of their
    own scale (``levels``: a store's level is checked against the weights it was written with).

    Args:
        old: the index entry being replaced, or None.
        entry: the new entry.

    Returns:
        ``{"superseded": [...], "halo_prior_superseded": [...]}`` (lists possibly empty).
    """
    old = old or {}
    kept = {"superseded": list(old.get("superseded", [])), "halo_prior_superseded": []}
    if old and old["digest"] != entry["digest"]:
        kept["superseded"].append({k: old[k] for k in ("file", "digest", "levels", "halo_prior",
                                                       "halo_prior_superseded") if k in old})
        return kept
    priors = list(old.get("halo_prior_superseded", []))
    if old.get("halo_prior") and old["halo_prior"]["digest"] != entry.get("halo_prior", {}).get("digest"):
        priors.append(old["halo_prior"])
    kept["halo_prior_superseded"] = priors
    return kept


def install(src: Path, name: str, check) -> None:
    """``src`` into the package as ``name``: copied beside it, checked (``check(path)``), then
    renamed into place; an identical file already there is kept as it is.

    Args:
        src: the file to ship.
        name: its name under :data:`WEIGHTS`.
        check: called with the copy's path; raises where the copy is not what was measured.
    """
    dest = WEIGHTS / name
    if dest.is_file() and filecmp.cmp(src, dest, shallow=False):
        return
    tmp = dest.with_name(f".{name}.tmp")
    try:
        shutil.copyfile(src, tmp)
        check(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def ship(checkpoint: Path, rd_path: Path, force: bool = False) -> dict:
    """Copy the weights (and their prior) into the package and index them.

    Args:
        checkpoint: the variable-rate weights.
        rd_path: their measured curve.
        force: ship although the curve fails the gate.

    Returns:
        The new index entry.

    Raises:
        SystemExit: the curve is of other weights, or the gate fails without ``force``.
        WeightsError: the weights or their prior are damaged, or a copy is not what was read.
    """
    from geocompress.codec import load_checkpoint, state_digest
    from geocompress.codec.weights import checkpoint_halo_prior, load_with_delta

    model = load_checkpoint(checkpoint)
    if getattr(model, "arch", None) != ARCH:
        raise SystemExit(f"{checkpoint} holds {getattr(model, 'arch', '?')} weights, not {ARCH}")
    digest = state_digest(model.state_dict())
    rd = json.loads(rd_path.read_text())
    if rd.get("digest") != digest:
        raise SystemExit(f"{rd_path} measured weights {str(rd.get('digest'))[:12]}, not {checkpoint}'s "
                         f"{digest[:12]}: run benchmarks/vr_rd.py --checkpoint {checkpoint} first")
    failed = gate(rd)
    prior = checkpoint_halo_prior(checkpoint)
    if prior is None:  # shipped without one, --halo auto would code the default at halo 0
        failed.append(f"no halo prior beside {checkpoint} refits these weights (pipelines/"
                      f"fit_halo_priors.py --checkpoint {checkpoint})")
    if failed and not force:
        raise SystemExit("not shipped, the gate fails: " + "; ".join(failed) + " (--force ships anyway)")
    prior_digest = None
    if prior is not None:
        prior_digest = state_digest(load_with_delta(checkpoint, digest, prior[0]).state_dict())
    index_path = WEIGHTS / "index.json"
    index = json.loads(index_path.read_text())
    entry = index_entry(model, rd, digest, prior_digest)
    entry.update(superseded(index.get(ARCH), entry))
    base = WEIGHTS / entry["file"]
    install(checkpoint, entry["file"], lambda p: load_checkpoint(p, expected_digest=digest))
    if prior is not None:
        install(prior[0], entry["halo_prior"]["file"],
                lambda p: load_with_delta(base, digest, p, expected_digest=prior_digest))
    index[ARCH] = entry
    tmp = index_path.with_suffix(".json.tmp")  # the index last, atomically: files before names
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    tmp.replace(index_path)
    if failed:
        print("shipped although the gate fails: " + "; ".join(failed))
    return entry


def main(argv: list[str] | None = None) -> None:
    """``ship_vr.py``: ship the weights (see the module's docstring), print what shipped.

    Args:
        argv: the command line (default ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=WIP, help="the weights (default the run's wip export)")
    p.add_argument("--rd", type=Path, default=RD, help="their curve from benchmarks/vr_rd.py")
    p.add_argument("--force", action="store_true", help="ship although the curve fails the gate")
    a = p.parse_args(argv)
    entry = ship(a.checkpoint, a.rd, a.force)
    print(f"shipped {ARCH}: {entry['levels']} levels, default {entry['default']:g}, digest "
          f"{entry['digest'][:12]}" + (", with its halo prior" if "halo_prior" in entry else "")
          + f"; {len(entry['superseded'])} earlier weights and {len(entry['halo_prior_superseded'])} "
          "earlier priors of these ship on")


if __name__ == "__main__":
    main()
