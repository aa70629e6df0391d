"""What a store holds, in the numbers users ask for: tiles, bytes, bpp, compression ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..store import TileStore


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def store_info(store: str | Path) -> dict[str, Any]:
    """What a store holds, in the numbers users ask for (``geocompress info``).

    Args:
        store: the store's folder.

    Returns:
        The scene (size, bands, dtype, nodata, CRS, transform, bounds), the codec (model, quality,
        weights digest, bits, halo, value ranges), the tile grid and status counts, tile and store
        bytes, bpp and the compression ratios against the raw pixels and the source file.

    Raises:
        StoreError: not a geocompress store.
        StoreIntegrityError: damaged bookkeeping, naming the array.
    """
    ts = TileStore.open(store, "r")
    ts.verify()  # raises StoreIntegrityError naming the damaged array
    m, g = ts.meta, ts.grid
    counts = ts.status_counts()
    tile_bytes = ts.nbytes_tiles()
    pixels = int(m["width"]) * int(m["height"])
    raw = pixels * int(m["count"]) * np.dtype(m["dtype"]).itemsize
    on_disk = _dir_size(Path(store))
    crs = g.crs
    return {
        "store": str(store),
        "status": m["status"],
        "checksums": ("verified" if m.get("content_digest") else
                      "none (store format 1)" if m.get("format_version", 1) < 2 else "not yet (incomplete)"),
        "source": m["source_name"],
        "source_checksum": m["source_checksum"],
        "size": f"{m['width']} x {m['height']} px, {m['count']} band(s) {m['dtype']}",
        "width": int(m["width"]), "height": int(m["height"]), "count": int(m["count"]),
        "dtype": m["dtype"], "model_name": m["model"], "quality": m["quality"],
        "weights_digest": m["weights_digest"], "grid_rows": g.n_rows, "grid_cols": g.n_cols,
        "band_names": m.get("band_names"),
        "nodata": m.get("nodata"),
        "crs": (crs.to_string() if crs is not None else None),
        "transform": tuple(g.transform)[:6],
        "bounds": g.bounds,
        "model": f"{m['model']} quality {m['quality']} weights {m['weights_digest'][:16]}",
        "bits": m.get("codec_config", {}).get("bits"),
        "halo": int(m.get("codec_config", {}).get("halo", 0)),
        "value_range": m.get("codec_config", {}).get("value_range"),  # None: 0 .. 2**bits - 1
        "tile": f"{m['tile']} px, stride {m['stride']}, grid {g.n_rows} x {g.n_cols}",
        "tiles": counts,
        "tile_bytes": tile_bytes,
        "store_bytes": on_disk,
        "bpp": 8 * tile_bytes / pixels,
        "bpp_store": 8 * on_disk / pixels,
        "ratio_raw": raw / max(tile_bytes, 1),
        "ratio_source_file": int(m.get("source_size") or 0) / max(tile_bytes, 1),
    }
