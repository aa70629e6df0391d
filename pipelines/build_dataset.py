"""Build the project's training datasets from the shared data folder.

    .venv/bin/python pipelines/build_dataset.py [--set rs-v1|extra] [--data DIR] [--out STORE]

``rs-v1`` (``geocompress-rs-v1``, the default): every scene of ``DATA/scenes`` (sub-folders are
band stacks, Landsat B4/B3/B2 as RGB) and the UC Merced class folders of ``DATA/tiles/ucmerced``.
``extra`` (``geocompress-rs-extra-v1``): the 10-200 m satellite scenes of ``DATA/scenes-extra``
(Landsat 5/7/8, Sentinel-1/2), a dataset of its own so that rs-v1's splits, and every figure
measured on its test split, stay as they were; training reads both (``--dataset A B``).
Seed 0, 8:1:1, 4 x 4-tile blocks. The catalog entry goes to ``catalogs/datasets/``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from geocompress.training import build_dataset, discover_scenes

REPO = Path(__file__).resolve().parents[1]
NAME = "geocompress-rs-v1"
SETS = {"rs-v1": ("geocompress-rs-v1", "scenes", True),
        "extra": ("geocompress-rs-extra-v1", "scenes-extra", False)}


def default_data() -> Path:
    return Path(os.environ.get("GEOCOMPRESS_DATA", REPO.parent / "shared" / "data"))


def gridded(sources: list, cache: Path) -> list:
    """``sources`` with every scene georeferenced only by ground control points replaced by a
    copy warped onto a grid in ``cache`` (a training tile needs pixels on a grid, not the GCPs);
    the copies are made once and live outside the repository's tracked files."""
    import rasterio
    from rasterio.vrt import WarpedVRT

    from geocompress.training.sources import SceneSource

    out = []
    for src in sources:
        if len(src.paths) == 1:
            with rasterio.open(src.paths[0]) as ds:
                if ds.crs is None and ds.gcps[0]:
                    target = cache / f"{src.name}.tif"
                    if not target.exists():
                        cache.mkdir(parents=True, exist_ok=True)
                        with WarpedVRT(ds, src_crs=ds.gcps[1]) as vrt:
                            profile = {"driver": "GTiff", "width": vrt.width, "height": vrt.height,
                                       "count": vrt.count, "dtype": vrt.dtypes[0], "crs": vrt.crs,
                                       "transform": vrt.transform, "nodata": vrt.nodata,
                                       "compress": "deflate"}
                            tmp = target.with_suffix(".part.tif")
                            with rasterio.open(tmp, "w", **profile) as dst:
                                dst.write(vrt.read())
                            tmp.replace(target)
                    src = SceneSource.of(target, name=src.name)
        out.append(src)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--set", choices=sorted(SETS), default="rs-v1", help="which dataset")
    p.add_argument("--out", type=Path, default=None, help="default: data/<dataset name>.zarr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    name, scenes, with_tiles = SETS[a.set]
    a.out = a.out or REPO / "data" / f"{name}.zarr"
    sources = gridded(discover_scenes(a.data / scenes), REPO / "data" / "gridded")
    summary = build_dataset(a.out, scenes=sources,
                            image_folders=[a.data / "tiles" / "ucmerced"] if with_tiles else [],
                            seed=a.seed, name=name,
                            workers=a.workers, catalog_dir=REPO / "catalogs" / "datasets",
                            overwrite=True)
    for s in summary["sources"]:  # paths relative to the data folder: the catalog is portable
        s["paths"] = [os.path.relpath(x, a.data) for x in s["paths"]]
    from geocompress.training.dataset import write_catalog

    write_catalog({**summary, "store": os.path.relpath(a.out, REPO),
                   "data": "../shared/data (see its SOURCES.md)"}, REPO / "catalogs" / "datasets")
    print(json.dumps(summary["counts"]["split"]), f"{summary['build_seconds']} s -> {a.out}")


if __name__ == "__main__":
    main()
