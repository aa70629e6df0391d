"""``geocompress tile`` and ``geocompress train``: argparse front ends of the training package.

Wire into the main CLI with ``add_tile_parser(sub)`` and ``add_train_parser(sub)`` where ``sub``
is the ``add_subparsers()`` object; each subcommand sets ``func`` (called with the parsed args).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .lambdas import COMPRESSAI, PAPER

_RAW = argparse.RawDescriptionHelpFormatter


def add_tile_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``geocompress tile`` sub-command's options (kept here, beside the code they drive, so the
    CLI stays a thin list of sub-commands).

    Args:
        sub: the CLI's sub-parsers.

    Returns:
        The sub-command's parser.
    """
    p = sub.add_parser(
        "tile", formatter_class=_RAW,
        help="build a tiled training dataset (Zarr) from GeoTIFF scenes and image folders",
        description="Cut GeoTIFF scenes into 256 x 256 tiles on Dask (the scene pipeline's grid; "
                    "only tiles fully inside the scene and fully valid; constant tiles dropped) and "
                    "add folders of classification images (class = sub-folder name); split 8:1:1 "
                    "into train/val/test from a seed (scenes by spatial blocks, images stratified "
                    "per class); write a Zarr v3 store and a catalog entry.",
        epilog="examples:\n"
               "  geocompress tile ds.zarr --scenes-dir ../shared/data/scenes "
               "--images ../shared/data/tiles/ucmerced\n"
               "  geocompress tile ds.zarr --scene a.tif --scene B4.tif,B3.tif,B2.tif "
               "--catalog catalogs/datasets")
    p.add_argument("out", type=Path, help="the Zarr store to write (e.g. data/mydata.zarr)")
    p.add_argument("--scene", action="append", default=[], metavar="TIF[,TIF...]",
                   help="a scene file, or comma-separated single-band files of one band stack "
                        "(repeatable)")
    p.add_argument("--scenes-dir", type=Path, action="append", default=[],
                   help="every *.tif in the folder is a scene, every sub-folder a band stack")
    p.add_argument("--images", type=Path, action="append", default=[],
                   help="a folder of class folders of images (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--block", type=int, default=4,
                   help="spatial split block, in tiles per side (default 4)")
    p.add_argument("--min-valid", type=float, default=1.0,
                   help="minimum valid-pixel fraction of a kept scene tile (default 1.0)")
    p.add_argument("--workers", type=int, default=2, help="Dask threads (default 2)")
    p.add_argument("--catalog", type=Path, default=None,
                   help="folder for the catalog entry <name>.json/.md (default: none)")
    p.add_argument("--name", default=None, help="dataset name (default: the store's stem)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.set_defaults(func=run_tile)
    return p


def run_tile(args: argparse.Namespace) -> int:
    """Build a tiled dataset from the parsed ``geocompress tile`` arguments.

    Args:
        args: the parsed arguments.

    Returns:
        The exit status, 0.

    Raises:
        SystemExit: no scene, scenes folder or image folder was given.
    """
    from geocompress.geo import TileFilter

    from .dataset import DatasetRecipe, build_dataset
    from .sources import SceneSource, discover_scenes

    scenes = [SceneSource.of(s.split(",") if "," in s else s) for s in args.scene]
    for d in args.scenes_dir:
        scenes += discover_scenes(d)
    if not scenes and not args.images:
        raise SystemExit("nothing to tile: give --scene, --scenes-dir or --images")
    recipe = DatasetRecipe(seed=args.seed, block=args.block, workers=args.workers,
                           tile_filter=TileFilter(min_valid_fraction=args.min_valid))
    summary = build_dataset(args.out, scenes, args.images, recipe, name=args.name,
                            catalog_dir=args.catalog, overwrite=args.overwrite)
    print(json.dumps({"store": str(args.out), **summary["counts"]["split"],
                      "seconds": summary["build_seconds"]}))
    return 0


def add_train_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``geocompress train`` sub-command's options.

    Args:
        sub: the CLI's sub-parsers.

    Returns:
        The sub-command's parser.
    """
    from geocompress.models.arch_names import ARCH_NAMES

    p = sub.add_parser(
        "train", formatter_class=_RAW,
        help="train a codec on a tiled dataset (R + lambda * D, resumable)",
        description="Train an architecture on the train split of a `geocompress tile` store with "
                    "the paper's recipe: loss bpp + lambda * 255^2 * MSE, Adam lr 1e-4 (main) and "
                    "1e-3 (entropy-bottleneck quantiles), batch 8 of random crops with flips, "
                    "gradient clipping 1.0, lr halved on a validation plateau. Rerunning the same "
                    "command resumes exactly where it stopped. Writes OUT/train_state.pt, "
                    "OUT/log.csv, OUT/curves.png and, when done, OUT/model.pt (fp16, usable as "
                    "`--checkpoint`).",
        epilog="lambda tables (--lambda-scale):\n"
               f"  compressai: {', '.join(f'q{q}={v}' for q, v in COMPRESSAI.items())}\n"
               f"  paper:      {PAPER}  (see catalogs/lambda.md)\n"
               "examples:\n"
               "  geocompress train data/ds.zarr runs/q3 --lambda 0.016 --steps 20000 "
               "--crop 128 --config N=64 M=96\n"
               "  geocompress train data/ds.zarr runs/q2 --lambda 0.0054 --steps 10000 "
               "--warm-start runs/q3/train_state.pt")
    p.add_argument("dataset", nargs="+",
                   help="tile store(s) (from `geocompress tile`); several are concatenated, and "
                        "STORE*K repeats one K times in the train split")
    p.add_argument("out", type=Path, help="run folder (state, log, plot, final checkpoint)")
    p.add_argument("--arch", default="mgssnet", choices=ARCH_NAMES)
    p.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                   help="architecture settings, e.g. N=64 M=96")
    p.add_argument("--lambda", dest="lmbda", type=float, default=None,
                   help="rate-distortion trade-off (see --lambda-scale); required except for "
                        "mgssnet-vr, which trains every level at its own lambda")
    p.add_argument("--lambda-scale", choices=("compressai", "paper"), default="compressai",
                   help="scale of --lambda (default compressai: bpp + lambda*255^2*MSE)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="optimizer steps in total")
    g.add_argument("--epochs", type=int, help="passes over the train split (default 1)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256, help="training crop (multiple of 64)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--aux-lr", type=float, default=1e-3)
    p.add_argument("--val-every", type=int, default=None, help="steps (default: each epoch)")
    p.add_argument("--val-limit", type=int, default=None, help="validation tiles (default all)")
    p.add_argument("--warm-start", type=Path, default=None,
                   help="start from these weights (train_state.pt or model.pt, same architecture)")
    p.add_argument("--warmup-steps", type=int, default=200,
                   help="after a warm start from a model.pt (no Adam moments), ramp the lr up over this "
                        "many steps: a fresh Adam's first full-size steps undo part of the trained weights")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing train_state.pt")
    p.add_argument("--time-budget-min", type=float, default=None,
                   help="stop (state saved) after this many minutes; rerun to continue")
    p.add_argument("--checkpoint-every-s", type=float, default=240.0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=None, help="quality index recorded in the checkpoint")
    _add_recipe_modes(p)
    p.set_defaults(func=run_train)
    return p


def _add_recipe_modes(p: argparse.ArgumentParser) -> None:
    """The options that change how the recipe trains rather than how long or on what: quantization,
    precision, re-stretching and the weight average (a resumed run keeps its own where unset)."""
    p.add_argument("--quantization", choices=("noise", "mixed"), default=None,
                   help="noise: CompressAI's uniform noise; mixed: the decoder-side transforms see the "
                        "rounded latents the codec decodes (closes the gap between the estimated and "
                        "the real coded rate / PSNR; geocompress.training.quantization). Default: a "
                        "resumed run's own, else noise")
    p.add_argument("--precision", choices=("auto", "float32", "mixed"), default="auto",
                   help="mixed: bf16 autocast for dense convolutions and attention, float32 for "
                        "depthwise convolutions and the entropy models (auto: mixed on CUDA and on "
                        "CPUs with AMX / AVX512-BF16, else float32)")
    p.add_argument("--stretch", type=float, default=None, metavar="P",
                   help="probability that a training crop is re-stretched band by band and its bands "
                        "shuffled, so that the codec also learns false-colour and percentile-stretched "
                        "composites (geocompress.training.data.restretch). Default: a resumed run's "
                        "own, else 0")
    p.add_argument("--ema", type=_decay, default=None, metavar="DECAY",
                   help="keep a moving average of the weights with this decay (0.999: about the "
                        "last 1,000 steps), validated beside them and exported in their place: "
                        "it smooths the scatter of small-batch steps (geocompress.training.ema). "
                        "0: none. Default: a resumed run's own, else none")


def _decay(text: str) -> float:
    """``--ema``'s decay: 0 (none) or in (0, 1), refused before a run folder is made."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value == 0.0 or 0.0 < value < 1.0):
        raise argparse.ArgumentTypeError(f"a decay must be 0 (none) or lie in (0, 1), got {text!r}")
    return value


def _value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def run_train(args: argparse.Namespace) -> int:
    """Train from the parsed ``geocompress train`` arguments (resumes a run whose state exists).

    Args:
        args: the parsed arguments.

    Returns:
        The exit status, 0.

    Raises:
        SystemExit: a malformed ``--config`` item, or a missing / meaningless ``--lambda`` (a
            fixed-rate architecture needs one; ``mgssnet-vr`` trains each level at its own).
    """
    from .lambdas import resolve
    from .trainer import train

    config = {}
    for item in args.config:
        key, sep, val = item.partition("=")
        if not sep:
            raise SystemExit(f"--config expects KEY=VALUE, got {item!r}")
        config[key] = _value(val)
    variable_rate = args.arch == "mgssnet-vr"
    if args.lmbda is None and not variable_rate:
        raise SystemExit(f"--lambda is required for {args.arch}")
    if args.lmbda is not None and variable_rate:
        raise SystemExit("mgssnet-vr trains each rate level at its own lambda "
                         "(geocompress.models.variable_rate.LEVEL_LAMBDAS): drop --lambda")
    lmbda = 0.0 if variable_rate else resolve(args.lmbda, args.lambda_scale)
    datasets = args.dataset if len(args.dataset) > 1 else args.dataset[0]
    names = "+".join(Path(d.rpartition("*")[0] if "*" in d else d).name.removesuffix(".zarr")
                     for d in args.dataset)
    r = train(args.arch, config, datasets, lmbda, args.out,
              steps=args.steps, epochs=args.epochs, batch=args.batch, crop=args.crop, lr=args.lr,
              aux_lr=args.aux_lr, resume=not args.no_resume, device=args.device,
              warm_start=args.warm_start, seed=args.seed, val_every=args.val_every,
              val_limit=args.val_limit, checkpoint_every_s=args.checkpoint_every_s,
              threads=args.threads, quality=args.quality, quantization=args.quantization,
              warmup_steps=args.warmup_steps, stretch=args.stretch, precision=args.precision, ema=args.ema,
              time_budget_s=None if args.time_budget_min is None else args.time_budget_min * 60,
              dataset_name=names)
    print(json.dumps({"step": r.step, "total": r.total_steps, "finished": r.finished,
                      "val": r.val, "checkpoint": str(r.checkpoint) if r.checkpoint else None,
                      "digest": r.digest}))
    return 0
