"""Build the project's training dataset ``geocompress-rs-v1`` from the shared data folder.

    .venv/bin/python pipelines/build_dataset.py [--data DIR] [--out data/geocompress-rs-v1.zarr]

Sources: every scene of ``DATA/scenes`` (sub-folders are band stacks, Landsat B4/B3/B2 as RGB)
and the UC Merced class folders of ``DATA/tiles/ucmerced``. Seed 0, 8:1:1, 4 x 4-tile blocks.
The catalog entry goes to ``catalogs/datasets/``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from geocompress.training import build_dataset, discover_scenes

REPO = Path(__file__).resolve().parents[1]
NAME = "geocompress-rs-v1"


def default_data() -> Path:
    return Path(os.environ.get("GEOCOMPRESS_DATA", REPO.parent / "shared" / "data"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--out", type=Path, default=REPO / "data" / f"{NAME}.zarr")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    summary = build_dataset(a.out, scenes=discover_scenes(a.data / "scenes"),
                            image_folders=[a.data / "tiles" / "ucmerced"], seed=a.seed, name=NAME,
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
