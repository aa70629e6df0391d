"""``geocompress``: compress whole satellite scenes, get them (or any region) back as GeoTIFF.

Thin by design: parses arguments, calls the library, prints results.
"""

from __future__ import annotations

import argparse
import math
import json
import os
import re
import sys
import warnings
from pathlib import Path

from geocompress.shipped import DEFAULT_ARCH, is_variable_rate_entry, shipped_index

SAMPLE_SCENE = "sample_aerial_korea_0.6m.tif"  # CC0, from rasterio's test data: data/SAMPLE.md


def sample_scene() -> Path:
    """The 1024 x 1024 sample scene shipped inside the package (the demo's default)."""
    return Path(__file__).resolve().parent / "data" / SAMPLE_SCENE


def _cluster_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("dask")
    g.add_argument("--scheduler", metavar="ADDRESS",
                   help="use an existing Dask cluster (e.g. tcp://10.0.0.5:8786); its workers "
                        "declared with --resources GPU=1 run the model on GPU. Default: jobs of "
                        "up to 64 tiles run in this process (no cluster start-up: seconds), "
                        "larger ones on an embedded LocalCluster")
    g.add_argument("--workers", type=_positive, default=None,
                   help="run on an embedded LocalCluster of this many worker processes, whatever "
                        "the job's size (default: one per core for jobs over 64 tiles; torch "
                        "threads are split between them)")
    g.add_argument("--precision", choices=("auto", "bfloat16", "float16", "float32",
                                           "float32-onnx", "float64"),
                   default="auto",
                   help="numeric precision of the transforms (default auto: bfloat16 on CPUs with "
                        "AMX / AVX512-BF16 and on GPUs, else float32-onnx where ONNX Runtime is "
                        "installed, else float32). Any precision decodes any store; only float64 "
                        "gives pixel-identical output on every machine, batch size and thread "
                        "count; float32-onnx decodes without torch once the weights' decoder is "
                        "cached, and gives the pixels of the lazy xarray view")


def _options(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--co expects NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def _auto_or_int(text: str, lo: int, hi: int, what: str) -> int | str:
    """'auto', or a whole number ``lo..hi`` (``what`` names it in the error)."""
    if text == "auto":
        return text
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise argparse.ArgumentTypeError(f"expected 'auto' or {what}, got {text!r}")
    return int(text)


def _bits(text: str) -> int | str:
    return _auto_or_int(text, 1, 16, "a bit depth 1-16")


def _halo(text: str) -> int | str:
    """``compress --halo``: 'auto' or 0..255 latent pixels."""
    return _auto_or_int(text, 0, 255, "0..255 latent pixels")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --tile bounds. Upper: the codec decodes at most MAX_DECODE_PIXELS = 4096 * 4096 pixels per tile
# (geocompress.codec.tile_codec; not imported here, the parser stays torch-free), and one tile is
# held whole in memory by every encode task. Lower: the models' downsampling factor (64 for the
# hyperprior architectures): a smaller tile is mostly padding and a grid of millions of tiles.
MIN_TILE, MAX_TILE = 64, 4096


def _tile_size(text: str) -> int:
    """A tile side for ``compress --tile``, bounded so that a typo is a clear refusal.

    Raises:
        argparse.ArgumentTypeError: not a whole number in MIN_TILE..MAX_TILE (a larger tile could
            not be decoded and dies allocating memory; a smaller one is mostly padding).
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if not MIN_TILE <= value <= MAX_TILE:
        raise argparse.ArgumentTypeError(
            f"must be {MIN_TILE}..{MAX_TILE} pixels, got {value} (the codec decodes at most "
            f"{MAX_TILE} x {MAX_TILE} pixels per tile; a tile under {MIN_TILE} px is mostly "
            f"padding)")
    return value


def _quality(text: str) -> float | int:
    """A quality: a whole number (shipped fixed-rate weights) or a level on a variable-rate
    model's continuous scale; never negative, infinite or not a number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return int(value) if value == int(value) and "." not in text else value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def _quality_help(index: dict, arch_option: bool = True) -> str:
    """``--quality``'s help, for the default codec as shipped: a level on a variable-rate model's
    continuous scale, or a fixed-rate quality 1..Q (both explained where both ship and the
    command has ``--arch``)."""
    entry = index.get(DEFAULT_ARCH, {})
    vr = ("any level on a variable-rate model's continuous scale (e.g. 5.5; higher = more bits; "
          "its weights' level_lambdas say which trade-off each level is; a level beyond the top "
          "is refused)")
    fixed = "a shipped fixed-rate quality 1..Q (default: the middle one)"
    if is_variable_rate_entry(entry):
        other = f"; with --arch mgssnet, {fixed}" if arch_option else ""
        return (f"level 0..{entry['levels'] - 1} of the default {DEFAULT_ARCH} (default: level "
                f"{entry['default']:g}): {vr}{other}")
    other = "--arch mgssnet-vr (or a variable-rate --checkpoint)" if arch_option else \
        "a variable-rate --checkpoint"
    return f"{fixed}; with {other}, {vr}"


def _codec_args(p: argparse.ArgumentParser, index: dict) -> None:
    g = p.add_argument_group("codec")
    variable = [a for a, e in index.items() if a != DEFAULT_ARCH and is_variable_rate_entry(e)]
    ladder = ("Fixed-rate: mgssnet (qualities 1..Q). " if DEFAULT_ARCH != "mgssnet" and "mgssnet" in index
              else "")
    others = ", ".join(a for a in index if a not in (DEFAULT_ARCH, "mgssnet", *variable))
    g.add_argument("--arch", default=DEFAULT_ARCH,
                   help=f"architecture (default {DEFAULT_ARCH}, the project's codec). "
                        + (f"Variable-rate: {', '.join(variable)} (any --quality level on its scale). "
                           if variable else "")
                        + ladder + f"Also shipped: {others or 'none'} (baselines that beat MGSSNet at one "
                        "short, equal training budget; far below the shipped mgssnet: "
                        "catalogs/models/<arch>.md). Any registry architecture with --checkpoint")
    g.add_argument("--quality", type=_quality, default=None, help=_quality_help(index))
    g.add_argument("--checkpoint", help="use this checkpoint instead of shipped weights")
    g.add_argument("--untrained", action="store_true",
                   help="fixed-seed untrained weights (testing the pipeline only)")
    g.add_argument("--batch-size", type=_positive, default=8, help="tiles per model batch (default 8)")


def _codec_choice(a: argparse.Namespace):
    """The codec the options name (``--arch``, ``--quality``, ``--checkpoint``, ``--untrained``,
    ``--batch-size``, ``--precision``, ``--refine-steps``: those the command has)."""
    from .codec.choice import CodecChoice

    untrained = getattr(a, "untrained", False)
    return CodecChoice(arch=getattr(a, "arch", DEFAULT_ARCH), quality=getattr(a, "quality", None),
                       checkpoint=a.checkpoint, pretrained=not untrained,
                       precision=getattr(a, "precision", "auto"),
                       batch_size=getattr(a, "batch_size", 8),
                       refine_steps=getattr(a, "refine_steps", 0),
                       config={"N": 64, "M": 96} if untrained else {})


def _cluster_choice(a: argparse.Namespace):
    """Where the tasks run (``--scheduler``, ``--workers``, ``--gpu``) and ``--quiet``."""
    from .scene.cluster import ClusterChoice

    return ClusterChoice(scheduler=a.scheduler, workers=a.workers,
                         gpu=getattr(a, "gpu", False), progress=not a.quiet)


def cmd_compress(a: argparse.Namespace) -> int:
    """``geocompress compress``: the scene into a store; prints what was written (JSON).

    Args:
        a: the parsed options.

    Returns:
        The exit status (0).

    Raises:
        ValueError: a quality together with a rate target, or what
            :func:`~geocompress.scene.compress_scene` refuses.
    """
    from .geo import TileFilter
    from .scene import compress_scene
    from .scene.compress import TilingChoice
    from .scene.rate_control import RateTarget

    rate = None
    if a.target_bpp is not None or a.target_psnr is not None:
        if a.quality is not None:
            raise ValueError("give a --quality or a rate target (--target-bpp / --target-psnr), "
                             "not both")
        rate = RateTarget(bpp=a.target_bpp, psnr=a.target_psnr, sample=a.rate_sample)
    tiling = TilingChoice(tile=a.tile, shard=a.shard, bits=a.bits, halo=a.halo,
                          tile_filter=TileFilter(a.min_valid_fraction, not a.keep_constant),
                          value_range=a.value_range)
    r = compress_scene(a.scene if len(a.scene) > 1 else a.scene[0], a.store, _codec_choice(a),
                       tiling=tiling, cluster=_cluster_choice(a), rate=rate,
                       overwrite=a.overwrite)
    print(json.dumps(r.summary(), indent=2))
    return 0


def cmd_decompress(a: argparse.Namespace) -> int:
    """``geocompress decompress``: a store (or a region of it) to a raster; prints its path.

    Args:
        a: the parsed options.

    Returns:
        The exit status (0).

    Raises:
        ValueError: both ``--window`` and ``--bbox``, ``--bbox-crs`` without ``--bbox`` or
            that is no CRS, or what
            :func:`~geocompress.scene.decompress_scene` refuses.
    """
    from .scene import decompress_scene
    from .scene.mosaic import Region
    from .scene.output import OutputSpec, parse_overviews

    if a.window is not None and a.bbox is not None:  # Region lets bbox win: say so, not silently
        raise ValueError("--window and --bbox both give the region to decode: use one of them")
    if a.bbox_crs is not None and a.bbox is None:
        raise ValueError("--bbox-crs gives the CRS of --bbox, but no --bbox was given")
    if a.bbox_crs is not None:  # named here, not in a PROJ message about WKT
        from .geo.reproject import to_rasterio_crs

        try:
            to_rasterio_crs(a.bbox_crs)
        except Exception as e:  # noqa: BLE001 -- rasterio's CRSError and PROJ's errors
            raise ValueError(f"--bbox-crs {a.bbox_crs!r} is not a CRS (e.g. EPSG:4326, a WKT or "
                             f"PROJ string): {e}") from None
    output = OutputSpec(driver=a.driver, cog=not a.no_cog, creation_options=_options(a.co),
                        bands=None if a.bands is None else tuple(a.bands), dtype=a.dtype,
                        overviews=parse_overviews(a.overviews), resampling=a.resampling,
                        allow_lossy=a.lossy)
    region = Region(window=a.window, bbox=a.bbox, bbox_crs=a.bbox_crs,
                    allow_incomplete=a.allow_incomplete)
    out = decompress_scene(a.store, a.out, region, output=output, overwrite=a.overwrite,
                           codec=_codec_choice(a), cluster=_cluster_choice(a))
    print(out)
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    """``geocompress info``: what a store holds, for people or (``--json``) for scripts.

    Args:
        a: the parsed options.

    Returns:
        The exit status (0).
    """
    from .scene import store_info

    info = store_info(a.store)
    if a.json:  # numbers as numbers, for scripts
        print(json.dumps(info, indent=2, default=str))
    else:
        human = {k: v for k, v in info.items() if k not in (
            "width", "height", "count", "dtype", "model_name", "quality", "weights_digest",
            "grid_rows", "grid_cols")}
        for k, v in human.items():
            print(f"{k:>18}: {round(v, 4) if isinstance(v, float) else v}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """``geocompress demo``: compress, rebuild and measure a scene (the bundled sample by default).

    Args:
        a: the parsed options.

    Returns:
        The exit status: 0, or 2 when the scene does not exist.
    """
    from .scene.roundtrip import roundtrip

    scene = Path(a.scene) if a.scene else sample_scene()
    if not scene.exists():
        print(f"scene {scene} not found", file=sys.stderr)
        return 2
    rep = roundtrip(scene, a.out, _codec_choice(a), _cluster_choice(a))
    for k, v in rep.items():
        print(f"{k:>26}: {round(v, 4) if isinstance(v, float) else v}")
    return 0


def _add_compress(sub) -> argparse.ArgumentParser:
    """``compress``: the scene and store, codec, tiling, halo, refinement, rate control, Dask."""
    c = sub.add_parser("compress", help="compress a GeoTIFF scene into a Zarr store",
                       description="Tile SCENE into 256 x 256 tiles, drop nodata / constant "
                       "tiles, encode the rest with the learned codec on Dask workers and store "
                       "the byte strings, tile mask and georeferencing in STORE (Zarr v3). "
                       "Rerunning the same command resumes an interrupted run.")
    c.add_argument("scene", nargs="+", help="GeoTIFF, or several single-band files of one grid "
                   "(stacked as bands in the given order)")
    c.add_argument("store", help="output Zarr store (a directory, e.g. scene.zarr)")
    index = shipped_index()  # read once for the codec options and the rate-control heading
    _codec_args(c, index)
    _tiling_args(c)
    c.add_argument("--overwrite", action="store_true",
                   help="replace a store written with other weights, quality or source")
    c.add_argument("--gpu", action="store_true", help="LocalCluster workers declare a GPU")
    c.add_argument("--halo", default="auto", metavar="K", type=_halo,
                   help="latent pixels of neighbour context, for mosaics without tile seams "
                        "(encoder: 16*K pixels of each neighbour; decoder: K latent pixels of "
                        "each neighbour's latent; a region still decodes to the crop of the "
                        "whole). Default auto: 2 where the quality ships a halo prior (or a "
                        "--checkpoint has one for its very weights beside it, <stem>-halo.pt), "
                        "else 0 (tiles coded alone); a resumed store keeps its own. What it costs in "
                        "bits and gains in PSNR and seams: catalogs/halo.md, catalogs/seams.md")
    c.add_argument("--refine-steps", type=int, default=0, metavar="N",
                   help="refine each tile's latent with N gradient steps at encode time: more "
                        "PSNR for a few more bits, decoded by any geocompress, but a forward and "
                        "backward pass per step, slow on CPU: use a GPU (gains, bits and times "
                        "per quality: catalogs/models/refine_gain.md; default 0: off). Fixed-rate "
                        "models only (--arch mgssnet)")
    _rate_args(c, index)
    _cluster_args(c)
    c.set_defaults(func=cmd_compress)
    return c


def _tiling_args(c: argparse.ArgumentParser) -> None:
    """``compress``'s bit depth, tile and shard sizes and tile filter."""
    c.add_argument("--bits", default="auto", type=_bits,
                   help="significant bits of uint16 scenes, 8-16 (default auto: the scene's "
                        "declared NBITS, else the bit length of its largest valid value)")
    c.add_argument("--value-range", choices=("scene", "bits"), default="scene",
                   help="what the model's 0..1 stands for: 'scene' (default) each band's range of "
                        "valid values over the scene, found in one pass, so that dim 16-bit data "
                        "gets the contrast the model was trained on; 'bits' 0..2^bits-1 (as stores "
                        "written before it). A resumed store keeps its own (catalogs/value_range.md)")
    c.add_argument("--tile", type=_tile_size, default=256,
                   help=f"tile size in pixels, {MIN_TILE}..{MAX_TILE} (default 256)")
    c.add_argument("--shard", type=int, default=16,
                   help="tiles per shard side: one file and one Dask task per shard (default 16)")
    c.add_argument("--min-valid-fraction", type=float, default=0.0,
                   help="drop tiles with a smaller fraction of valid pixels (default 0: drop "
                        "only tiles with no valid pixel)")
    c.add_argument("--keep-constant", action="store_true",
                   help="encode single-value tiles instead of storing their value")


def _rate_args(c: argparse.ArgumentParser, index: dict) -> None:
    """``compress``'s rate control: a target bpp or PSNR instead of a quality."""
    default_vr = is_variable_rate_entry(index.get(DEFAULT_ARCH, {}))
    which = f"the default {DEFAULT_ARCH}" if default_vr else "--arch mgssnet-vr"
    r = c.add_argument_group(
        f"rate control (variable-rate models: {which})",
        "Ask for a rate or a quality instead of a level: the level is searched for through the "
        "real codec on a sample of the scene's tiles before anything is written; the achieved "
        "bpp (tile bytes over the scene's pixels) is printed and recorded with the target in "
        "the store and its STAC item")
    t = r.add_mutually_exclusive_group()
    t.add_argument("--target-bpp", type=_positive_float, metavar="BPP",
                   help="bits per pixel of the whole scene, e.g. 0.5")
    t.add_argument("--target-psnr", type=_positive_float, metavar="DB",
                   help="PSNR in dB over valid pixels (peak 2^bits - 1), e.g. 32")
    r.add_argument("--rate-sample", type=_positive, default=32, metavar="N",
                   help="tiles the search codes at each step (default 32)")


def _add_decompress(sub) -> argparse.ArgumentParser:
    """``decompress``: the store and output, the region, the weights, the output format, Dask."""
    d = sub.add_parser("decompress", help="rebuild a GeoTIFF (all or a region) from a store",
                       description="Decode STORE to a cloud-optimized GeoTIFF with the source's "
                       "CRS, transform, dtype, bands and nodata. With --window or --bbox only "
                       "the tiles the region touches are decoded.")
    d.add_argument("store")
    d.add_argument("out", help="output file; its extension picks the format (.tif: COG, .png, "
                                ".jp2, .jpg, .webp, .img) unless --driver names one")
    d.add_argument("--window", type=int, nargs=4, metavar=("COL_OFF", "ROW_OFF", "WIDTH", "HEIGHT"),
                   help="pixel window of the scene")
    d.add_argument("--bbox", type=float, nargs=4, metavar=("MINX", "MINY", "MAXX", "MAXY"),
                   help="bounding box (in --bbox-crs, default the scene's CRS)")
    d.add_argument("--bbox-crs", help="CRS of --bbox, e.g. EPSG:4326")
    d.add_argument("--checkpoint", help="checkpoint the store was written with, if not shipped")
    d.add_argument("--no-cog", action="store_true", help="plain tiled GeoTIFF, no overviews")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    _output_args(d)
    d.add_argument("--allow-incomplete", action="store_true",
                   help="decode a store whose compress run did not finish (its missing tiles come "
                        "back masked as nodata); without it such a store is refused")
    _cluster_args(d)
    d.set_defaults(func=cmd_decompress)
    return d


def _output_args(d: argparse.ArgumentParser) -> None:
    """``decompress``'s output format: driver, data type, overviews, bands, creation options."""
    from .scene.output import DTYPES, RESAMPLING

    d.add_argument("--driver", "-of", dest="driver", metavar="NAME",
                   help="GDAL driver of the output (e.g. GTiff, PNG, JP2OpenJPEG), like "
                        "gdal_translate -of; default from the extension. Formats that cannot keep "
                        "the scene's nodata or mask are refused")
    d.add_argument("--dtype", "-ot", dest="dtype", choices=DTYPES,
                   help="output data type (default the source's); values outside its range are "
                        "clipped, with a warning saying how many")
    d.add_argument("--overviews", nargs="+", metavar="F",
                   help="GeoTIFF overview levels: auto (default: down to one 256 px block), none, "
                        "or factors such as 2 4 8 16")
    d.add_argument("-r", "--resampling", default="average", choices=RESAMPLING,
                   help="overview resampling (default average; nearest for classes)")
    d.add_argument("-b", "--bands", type=_positive, nargs="+", metavar="B",
                   help="write only these bands (1-based, in this order), like gdal_translate -b")
    d.add_argument("--co", action="append", default=[], metavar="NAME=VALUE",
                   help="GDAL creation option of the output (repeatable), e.g. --co COMPRESS=ZSTD "
                        "--co LEVEL=9. Default: lossless DEFLATE with a predictor, exact decoded "
                        "pixels, often larger than a lossily compressed source. Options that change "
                        "pixels (COMPRESS=JPEG, lossy WEBP / JXL / LERC, NBITS) need --lossy")
    d.add_argument("--lossy", action="store_true",
                   help="allow a lossy output (.jpg, lossy .webp, --co COMPRESS=JPEG ...): smaller "
                        "files at a second generation of loss, with a warning. Refused for scenes "
                        "with a nodata value, whose nodata pixels would read as valid")


def _add_info(sub) -> argparse.ArgumentParser:
    """``info``: a store, and ``--json``."""
    i = sub.add_parser("info", help="describe a store: scene, georeferencing, tiles, bytes, bpp")
    i.add_argument("store")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)
    return i


def _add_demo(sub) -> argparse.ArgumentParser:
    """``demo``: a scene (default the bundled sample), the output folder, quality, Dask."""
    m = sub.add_parser("demo", help="the main job: compress a sample scene, rebuild it, measure",
                       description="Compress SCENE (default: the 1024 x 1024 sample scene bundled "
                       "with geocompress), rebuild it, print bpp, PSNR, MS-SSIM, compression ratio and "
                       "wall time, and write a side-by-side PNG of a crop to --out.")
    m.add_argument("scene", nargs="?", help="any GeoTIFF (default: the bundled 1024 x 1024 sample "
                   "scene, geocompress/data/SAMPLE.md)")
    m.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    m.add_argument("--quality", type=_quality, help=_quality_help(shipped_index(), arch_option=False))
    m.add_argument("--checkpoint", help="use this checkpoint instead of the shipped weights")
    _cluster_args(m)
    m.set_defaults(func=cmd_demo)
    return m


def build_parser() -> argparse.ArgumentParser:
    """The ``geocompress`` command line: compress, decompress, info, demo, and the training and
    evaluation commands where those subpackages are installed.

    Returns:
        The parser; each subcommand's ``func`` runs it.
    """
    p = argparse.ArgumentParser(
        prog="geocompress", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `geocompress COMMAND --help` for each command's options.")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_compress, _add_decompress, _add_info, _add_demo):
        # `geocompress compress ... --quiet` works as well as before the command
        add(sub).add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                              help="no progress bars")
    for mod, fn in (("training.commands", "add_tile_parser"), ("training.commands", "add_train_parser"),
                    ("evaluation.commands", "add_evaluate_parser")):
        try:
            module = __import__(f"geocompress.{mod}", fromlist=[fn])
        except ImportError:
            continue
        if hasattr(module, fn):
            getattr(module, fn)(sub)
    return p


# warnings about our dependencies' internals that no user can act on: torch's deprecation of
# torch.jit.script (CompressAI calls it) and zarr's note that variable-length bytes (the tile
# strings, documented in LAYOUT.md) have no Zarr v3 spec yet. Dask worker processes inherit them
# through PYTHONWARNINGS.
KNOWN_NOISE = ("ignore:`torch.jit.script` is deprecated:FutureWarning",
               "ignore:The data type (VariableLengthBytes()) does not have a Zarr V3:Warning")


def _silence_known_noise() -> None:
    for spec in KNOWN_NOISE:
        _, message, category = spec.split(":")
        warnings.filterwarnings("ignore", message=re.escape(message),
                                category=FutureWarning if category == "FutureWarning" else Warning)
    current = os.environ.get("PYTHONWARNINGS", "")
    os.environ["PYTHONWARNINGS"] = ",".join(x for x in (current, *KNOWN_NOISE) if x)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI prints it: ``geocompress: warning: <message>``, one line, without
    Python's file, line and source line (the CLI's own code: nothing a user can act on)."""
    return f"geocompress: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run one ``geocompress`` command line.

    When ``argv`` is not given, the process is the command (the ``geocompress`` program,
    ``python -m geocompress.cli``), and its garbage collector is set for a short-lived program
    (issue 38): collections every 100 000 allocations instead of 700 (start-up imports torch,
    CompressAI, Zarr and rasterio, ~250 000 objects: the default thresholds scan them all again and
    again for ~0.3 s and find next to nothing), and once the command is done the objects still
    alive are frozen (``gc.freeze()``), so that the interpreter's exit does not take them apart
    one by one (~0.5 s). Everything the command writes is closed by then.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 done, 1 an error reported on one line, 2 a usage error, 130
        interrupted (Ctrl-C).
    """
    import gc

    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # restored below: main may run inside a program
    if argv is None:
        gc.set_threshold(100_000, 10, 10)
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = formatwarning
        if argv is None:
            gc.freeze()


def _main(argv: list[str] | None) -> int:
    """:func:`main` with warnings already printed on one line."""
    from . import interrupt

    # SIGINT stops the run at any moment with 130, even when it was inherited ignored or a
    # library swallowed the first KeyboardInterrupt (issue 36, item 12)
    with interrupt.handling():
        command = "?"
        try:
            args = build_parser().parse_args(argv)
            command = args.command
            if command in ("compress", "decompress", "info", "demo"):
                from . import passive_omp_wait

                passive_omp_wait()
            _silence_known_noise()
            from .scene.failures import quiet_task_errors

            quiet_task_errors()  # a task's error is printed below, once, not also by Dask workers
            code = int(args.func(args) or 0)
            interrupt.check()
            return code
        except KeyboardInterrupt:
            return _interrupted(command)
        except (ValueError, RuntimeError, OSError) as e:  # our errors are ValueError/RuntimeError kinds
            if interrupt.requested():  # e.g. "Nanny failed to start": the interrupt, not a fault
                return _interrupted(command)
            print(f"geocompress {command}: error: {e}", file=sys.stderr)
            return 1


def _interrupted(command: str) -> int:
    print(f"geocompress {command}: interrupted (a compress resumes where it stopped when rerun)",
          file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
