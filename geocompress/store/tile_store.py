"""The geocompress Zarr v3 tile store (layout documented in ``LAYOUT.md``).

Layout (root group)::

    zarr.json         attrs: "geocompress" {format_version, model, weights_digest,
                      quality, codec_config, tile, stride, shard, source_*,
                      dtype, count, band_names, nodata, width, height, grid,
                      created, status: "in-progress"|"complete"}
                      + proj:/spatial: conventions (scene pixel grid)
    tiles/            (n_rows, n_cols) variable-length bytes, one codec string per
                      tile; 1x1 chunks inside S x S shards; fill b"" (no tile)
    status/           (n_rows, n_cols) uint8 TileStatus; S x S chunks; fill 0 PENDING
    masks/            (n_rows, n_cols, tile, tile) bool, True = valid (format 3); all
                      False for dropped / pending tiles; one chunk per tile, tiles' sharding
                      (format 2: (n_rows, n_cols) zlib(packbits) bytes, b"" = all valid)
    constant/         (n_rows, n_cols, count) source dtype; per-band value of
                      DROPPED_CONSTANT tiles; (S, S, count) chunks; fill 0
    tile_crc/         (n_rows, n_cols) uint32: each WRITTEN tile's check value, binding its
                      string to its cell also in incomplete stores (rule: ``tile_crc_rule``,
                      :func:`cell_crc`); S x S chunks; fill 0
    spatial_ref/      0-d CF grid mapping (crs_wkt, spatial_ref, GeoTransform of the
                      tile-index grid) -- tiles/status/constant point at it

Concurrency and crash safety
----------------------------
Writers must own **whole shard blocks** (:meth:`TileStore.shard_blocks`):
every array shares the S x S tile blocking, so one block is one file per
array and two writers never read-modify-write the same file. Within a block
the tile strings and constants are written first and the status last, so an
interrupted run leaves that block PENDING and a rerun redoes only pending
blocks (:meth:`TileStore.pending_blocks`). The root ``status`` attr becomes
``"complete"`` only in :meth:`TileStore.mark_complete`, after every tile is
final.

This relies on zarr's ``LocalStore`` writing each object via a temporary
``<key>.<uuid>.partial`` file then ``Path.replace`` (zarr 3.1
``storage/_local.py::_atomic_write``): a reader or a crash sees the old or the
new shard, never a torn one. There is no fsync, so after a *power loss* (not
a process crash) a recently replaced file may be empty on some filesystems;
the checksums in each shard index (crc32c) make such damage detectable on
read. A killed process can leave ``*.partial`` files behind; they are ignored
by zarr and harmless. Object stores (S3 etc.) give whole-object atomic PUTs,
so the same guarantees hold there.
"""

from __future__ import annotations


import hashlib
import json
import shutil
import struct
import warnings
from datetime import datetime, timezone
from pathlib import Path
from dataclasses import dataclass, replace as _replace_fields
from typing import Any, Iterator

import google_crc32c  # zarr's own dependency (its crc32c codec): the C implementation
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from geocompress.geo.grid import TileGrid
from geocompress.geo.source import SceneInfo
from geocompress.geo.status import TileStatus
from geocompress.store._convention import cf
from geocompress.store._convention import zarr as zconv
from geocompress.store.identity import IDENTITY, from_stored, stored_name, to_stored
from geocompress.store.masks import decode_mask, encode_mask
from geocompress.store.errors import (
    StoreError,
    StoreIntegrityError,
    StoreMismatchError,
    StoreVersionError,
)

FORMAT_VERSION = 3         # 3: masks as a chunked boolean array (any Zarr client reads them)
READ_VERSIONS = (1, 2, 3)  # 2: crc32c + digests, masks as zlib(packbits) bytes; 1: no checksums
ATTR = "geocompress"
TILES, STATUS, CONSTANT, SPATIAL_REF = "tiles", "status", "constant", "spatial_ref"
MASKS = "masks"
TILES_CRC = "tiles_crc32"  # a digest entry, not an array
CRC = "tile_crc"  # (n_rows, n_cols) uint32: each WRITTEN tile's check value, by grid cell
CRC_RULE = "tile_crc_rule"  # root-attribute key: how the tile_crc values are computed
CELL_RULE = "crc32c(row,col,string)"  # stores created since 2026-12-07 (cell_crc)
TRAILER_RULE = "string-crc32"  # stores before: the string's own CRC-32 trailer (no CRC_RULE key)
CRC_RULES = (CELL_RULE, TRAILER_RULE)
GEOREF = "georef_digest"  # root-attribute key: digests of every attribute outside ATTR
REQUIRED_CODEC_KEYS = IDENTITY  # arch, digest, quality (stored as model, weights_digest, quality)


def _canonical(value: Any) -> str:
    """Hex SHA-256 of a JSON value's canonical text (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def attrs_digest(meta: dict) -> str:
    """SHA-256 of the root attributes (all but the digest itself), canonical JSON.

    Args:
        meta: the ``geocompress`` root attributes.

    Returns:
        The hex digest: an edited attribute (size, transform, codec, ...) fails :meth:`TileStore.open`.
    """
    return _canonical({k: v for k, v in meta.items() if k != "attrs_digest"})


def cell_crc(row: int, col: int, string: bytes) -> int:
    """The check value ``tile_crc`` records for a tile of a store with :data:`CELL_RULE`: CRC-32C
    (Castagnoli) of the cell's row and column as little-endian uint64, then the tile string.

    The cell is part of the checked bytes, so a (string, value) pair moved to another cell --
    chunk files of ``tiles`` and ``tile_crc`` swapped together -- no longer matches. CRC-32C, not
    zlib's CRC-32: a string ends in its own CRC-32 (IEEE) trailer, and the IEEE CRC of any bytes
    followed by their own CRC is a constant, so ``zlib.crc32(prefix + string)`` (or one seeded with
    the cell) would depend only on the cell and the string's length, not on its content.

    Args:
        row: the tile's grid row.
        col: the tile's grid column.
        string: the tile string (may be empty: a WRITTEN cell whose string was deleted).

    Returns:
        The uint32 value.
    """
    return google_crc32c.extend(google_crc32c.value(struct.pack("<QQ", row, col)), bytes(string))


def _string_crcs(strings: np.ndarray, rule: str = TRAILER_RULE, row0: int = 0, col0: int = 0,
                 empty: bool = False) -> np.ndarray:
    """The ``tile_crc`` values of a block of strings whose first cell is ``(row0, col0)``, by
    ``rule``: :data:`TRAILER_RULE`, each string's own CRC-32 (its last 4 bytes, read
    little-endian), or :data:`CELL_RULE`, :func:`cell_crc`. 0 for an empty string, unless
    ``empty`` (verifying a WRITTEN cell: under the cell rule an empty string then differs from
    what was recorded, so a tile chunk deleted together with its ``tile_crc`` chunk is caught)."""
    out = np.zeros(strings.shape, np.uint32)
    for (i, j), t in np.ndenumerate(strings):
        if rule == CELL_RULE and (len(t) or empty):
            out[i, j] = cell_crc(row0 + i, col0 + j, t)
        elif rule == TRAILER_RULE and len(t):
            out[i, j] = int.from_bytes(bytes(t[-4:]), "little")
    return out


def georef_digests(root_attrs: dict, arrays: dict[str, Any]) -> dict[str, str]:
    """SHA-256 of everything outside the ``geocompress`` attributes that a reader can take
    georeferencing from: the root group's other attributes (``proj:code`` / ``proj:wkt2``,
    ``spatial:*``, ``zarr_conventions``) and each array's attributes (``spatial_ref``'s
    ``crs_wkt`` and ``GeoTransform``, the per-tile arrays' ``grid_mapping`` and ``spatial:*``) and
    dimension names.

    Args:
        root_attrs: the root group's attributes (``geocompress`` itself is left out: it has its
            own digest, which covers these digests).
        arrays: array name -> its metadata (``zarr`` ``ArrayV3Metadata``), from the arrays' own
            documents or from the consolidated copy in the root document.

    Returns:
        ``{"root": ..., <array name>: ...}``, one hex digest each, so that a mismatch names
        where the edit is.
    """
    out = {"root": _canonical({k: v for k, v in root_attrs.items() if k != ATTR})}
    for name, md in arrays.items():
        out[name] = _canonical({"attributes": dict(md.attributes),
                                "dimension_names": list(md.dimension_names or ())})
    return out


class _Quiet:
    """Silence zarr's 'VariableLengthBytes has no v3 spec yet' warning (known, accepted)."""

    def __enter__(self) -> None:
        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.filterwarnings("ignore", message=".*does not have a Zarr V3 specification.*")

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(*exc)


def _where(key: tuple) -> str:
    """' (tile rows a..b, columns c..d)' for a read of part of the grid, '' for all of it."""
    parts = []
    for what, k in zip(("rows", "columns"), key[:2]):
        if isinstance(k, slice) and (k.start is not None or k.stop is not None):
            stop = "end" if k.stop is None else k.stop - 1
            parts.append(f"{what} {k.start or 0}..{stop}")
        elif isinstance(k, (int, np.integer)):
            parts.append(f"{what[:-1]} {int(k)}")
    return f" (tile {', '.join(parts)})" if parts else ""


def _read(path: Path, name: str, array: Any, key: tuple) -> Any:
    """``array[key]``; a chunk that fails its checksum or cannot be decoded is a
    StoreIntegrityError naming the array and the part of the grid read, not a zarr traceback."""
    try:
        with _Quiet():
            return array[key]
    except (IndexError, TypeError, MemoryError, StoreError):
        raise
    except Exception as exc:  # noqa: BLE001 - crc32c mismatch, truncated shard index, ...
        raise StoreIntegrityError(
            f"{path}: the '{name}' array{_where(key)} is damaged: a chunk fails its checksum or "
            f"cannot be read ({exc}); re-create the store from its source") from exc


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json_number(v: Any) -> Any:
    if v is None:
        return None
    f = float(v)
    return int(f) if f.is_integer() else f


def _stored_georef(group: zarr.Group) -> dict[str, str]:
    """:func:`georef_digests` of a group as its own documents say (opened without consolidated
    metadata: what ``xr.open_zarr(consolidated=False)`` reads)."""
    with _Quiet():
        arrays = {name: group[name].metadata for name in sorted(group.array_keys())}
    return georef_digests(dict(group.attrs), arrays)


def _check_georef(path: Path, group: zarr.Group, want: dict[str, str]) -> None:
    """The georeferencing attributes outside ``geocompress`` as written, in the arrays' own
    documents and in the consolidated copy of the root document alike: xarray / rioxarray and
    GeoZarr readers take the CRS and transform from them, not from ``geocompress.grid``.

    Raises:
        StoreIntegrityError: naming the root group or array whose attributes were edited.
    """
    views = [("", _stored_georef(zarr.open_group(str(path), mode="r", use_consolidated=False)))]
    consolidated = group.metadata.consolidated_metadata
    if consolidated is not None:
        views.append((" (in the consolidated metadata of the root zarr.json)",
                      georef_digests(dict(group.attrs), dict(consolidated.metadata))))
    for where, got in views:
        bad = [name for name in want if got.get(name) != want[name]]
        if bad:
            names = ", ".join("the root group" if b == "root" else repr(b) for b in bad)
            raise StoreIntegrityError(
                f"{path}: the georeferencing attributes of {names}{where} (proj:code, spatial:*, "
                f"spatial_ref's CRS / GeoTransform, ...) were edited or damaged after writing "
                f"(digest mismatch): readers such as rioxarray would place the pixels wrongly; "
                f"re-create the store from its source")


def _layout_version(path: Path, group: zarr.Group) -> int:
    """The store format the arrays are laid out in, whatever the attributes say: 3 keeps masks
    as a 4-D boolean array, 2 has crc32c on ``status``, 1 neither.

    Raises:
        StoreIntegrityError: an array every format has is missing.
    """
    try:
        with _Quiet():
            masks, status = group[MASKS], group[STATUS]
    except KeyError as exc:
        raise StoreIntegrityError(f"{path}: the store's {exc} array is missing; re-create the "
                                  f"store from its source") from None
    if masks.ndim == 4:
        return 3
    return 2 if any(isinstance(c, Crc32cCodec) for c in status.metadata.codecs) else 1


def _check_version(path: Path, meta: dict, group: zarr.Group) -> None:
    """The root ``format_version`` against what this geocompress reads and against the layout.

    Raises:
        StoreVersionError: a version this geocompress does not read.
        StoreIntegrityError: the version disagrees with the arrays or with the digests present:
            it was edited (a store's format never changes in place), e.g. lowered to 1 to skip
            the checksums, after which the arrays would be read in the wrong layout.
    """
    v = meta["format_version"]
    if type(v) is not int or v not in READ_VERSIONS:
        hint = ("upgrade geocompress" if isinstance(v, (int, float)) and v > FORMAT_VERSION
                else "re-create it with --overwrite")
        raise StoreVersionError(
            f"{path} has store format version {v!r}, this geocompress reads versions "
            f"{', '.join(map(str, READ_VERSIONS))}: {hint}")
    layout = _layout_version(path, group)
    digests = [k for k in ("attrs_digest", "content_digest", GEOREF) if k in meta]
    if layout != v or (v < 2 and digests):
        found = (f"arrays laid out as format {layout}" if layout != v
                 else f"an {digests[0]} (format 1 has no checksums)")
        raise StoreIntegrityError(
            f"{path}: its root attributes say store format {v}, but it has {found}: the format "
            f"version was edited after writing; re-create the store from its source")


def _crc_rule(path: Path, meta: dict, group: zarr.Group) -> str:
    """How the store's ``tile_crc`` values are computed: the root ``tile_crc_rule`` (covered by
    ``attrs_digest`` from creation on, before any tile is written), :data:`TRAILER_RULE` in stores
    written before it. The ``tile_crc`` array's own attributes name the same rule.

    Raises:
        StoreVersionError: a rule this geocompress does not know (a newer writer).
        StoreIntegrityError: the root attributes and the ``tile_crc`` array disagree -- the rule
            or the ``tile_crc`` key was edited, e.g. to verify a store with the older rule that
            does not bind a tile to its cell.
    """
    rule = meta.get(CRC_RULE, TRAILER_RULE)
    if rule not in CRC_RULES:
        raise StoreVersionError(f"{path} records tile_crc rule {rule!r}, this geocompress knows "
                                f"{', '.join(map(repr, CRC_RULES))}: upgrade geocompress")
    try:
        with _Quiet():
            array = group[CRC]
    except KeyError:
        array = None
    if array is None:
        if CRC_RULE in meta:
            raise StoreIntegrityError(f"{path}: the store's '{CRC}' array is missing; re-create "
                                      f"the store from its source")
        return rule
    stored = dict(array.attrs).get(CRC_RULE, TRAILER_RULE)
    if meta.get("format_version", 1) >= 2 and (not meta.get(CRC) or stored != rule):
        said = f"tile_crc rule {rule!r}" if meta.get(CRC) else f"no '{CRC}' array"
        raise StoreIntegrityError(
            f"{path}: its root attributes say {said}, but the '{CRC}' array was written with "
            f"rule {stored!r}: the root attributes were edited after writing (a tile_crc rule "
            f"lowered no longer binds tiles to their cells); re-create the store from its source")
    return rule


def _is_geocompress_store(path: Path) -> bool:
    try:
        with _Quiet():
            g = zarr.open_group(str(path), mode="r")
        return ATTR in g.attrs
    except Exception:  # noqa: BLE001
        return False


def _checked_codec_meta(codec_meta: dict) -> dict:
    """``codec_meta`` in the codec's vocabulary, refused if it lacks what every store records.

    Raises:
        ValueError: ``arch``, ``digest`` or ``quality`` is missing (under either of its names).
    """
    codec_meta = from_stored(codec_meta)
    missing = [k for k in REQUIRED_CODEC_KEYS if k not in codec_meta]
    if missing:
        names = [f"{k} (stored as {stored_name(k)})" if stored_name(k) != k else k for k in missing]
        raise ValueError(f"codec_meta lacks {', '.join(names)}; a store records "
                         f"{', '.join(REQUIRED_CODEC_KEYS)}")
    return codec_meta


def _clear_path(path: Path, overwrite: bool) -> None:
    """Make room for a new store at ``path``: only a geocompress store (or an empty folder) is
    ever deleted, so a mistyped output path cannot wipe unrelated data.

    Raises:
        StoreError: ``path`` exists and ``overwrite`` is false, or it is not a geocompress store.
    """
    if not path.exists():
        return
    if not overwrite:
        raise StoreError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if not (_is_geocompress_store(path) or (path.is_dir() and not any(path.iterdir()))):
        raise StoreError(f"refusing to overwrite {path}: it is not a geocompress store")
    shutil.rmtree(path)


def _root_meta(scene: SceneInfo, grid: TileGrid, codec_meta: dict, shard: int,
               format_version: int, tile_version: int | None) -> dict:
    """The ``geocompress`` root attributes of a new, in-progress store (before its digests):
    the codec that writes it, the grid and everything of the source a decoded GeoTIFF restores."""
    return {
        "format_version": int(format_version),
        **({} if tile_version is None else {"tile_format_version": int(tile_version)}),
        **to_stored({k: codec_meta[k] for k in IDENTITY}),
        "codec_config": codec_meta.get("config", {}),
        "tile": grid.tile,
        "stride": grid.step,
        "shard": shard,
        "source_name": scene.name,
        "source_files": [p.name for p in scene.paths],
        "source_checksum": scene.checksum,
        "source_size": scene.file_size,
        "dtype": scene.dtype,
        "count": scene.count,
        "band_names": list(scene.band_names),
        "colorinterp": list(scene.colorinterp),
        "scales": [float(v) for v in scene.scales],
        "offsets": [float(v) for v in scene.offsets],
        "units": list(scene.units),
        "tags": dict(scene.tags),
        "descriptions": list(scene.descriptions),
        "band_tags": [dict(t) for t in scene.band_tags],
        "tag_domains": {ns: dict(t) for ns, t in scene.tag_domains.items()},
        # each band's other metadata domains: recorded when a band has any (stores before: none)
        **({"band_tag_domains": [{ns: dict(t) for ns, t in d.items()} for d in scene.band_tag_domains]}
           if any(scene.band_tag_domains) else {}),
        # per band: an alpha band that is a pure mask (0 / opaque), rebuilt from the masks on
        # decode; other alpha bands decode as data. Recorded for scenes with an alpha band;
        # stores without it rebuild every alpha band (as before)
        **({"alpha_is_mask": [bool(f) for f in scene.alpha_is_mask]}
           if scene.alpha_is_mask and "alpha" in scene.colorinterp else {}),
        "nodata": _json_number(scene.nodata),
        "has_mask": scene.has_mask,
        "width": scene.width,
        "height": scene.height,
        "grid": grid.to_dict(),
        "created": _now(),
        "status": "in-progress",
    }


class _Layout:
    """What every array of a new store shares: grid size, shard blocking, checksums and the
    per-tile georeferencing attributes."""

    def __init__(self, grid: TileGrid, scene: SceneInfo, shard: int, format_version: int,
                 crc_rule: str = CELL_RULE) -> None:
        self.grid, self.count, self.dtype = grid, scene.count, scene.dtype
        self.format_version, self.crc_rule = format_version, crc_rule
        self.n = (grid.n_rows, grid.n_cols)
        self.shards = (min(shard, grid.n_rows), min(shard, grid.n_cols))
        # format 1 (tests of old stores) has no checksums: otherwise a flipped or truncated
        # bookkeeping chunk is an error, not values
        self.crc = [Crc32cCodec()] if format_version >= 2 else []
        self.per_tile = {
            **cf.data_var_attrs(),
            **zconv.spatial_attrs(grid.tile_index_transform, grid.n_rows, grid.n_cols),
            "zarr_conventions": [zconv.SPATIAL_CONVENTION],  # each array declares what it uses
            "description": "one tile per cell; cell (i, j) starts at pixel (i*stride, j*stride)",
        }

    def attrs(self, long_name: str, **more: Any) -> dict:
        """The per-tile attributes with this array's ``long_name`` (and any others)."""
        return {**self.per_tile, "long_name": long_name, **more}


def _create_arrays(g: zarr.Group, lay: _Layout, crs: Any) -> None:
    """Create the store's arrays, empty (every tile PENDING), in the layout of
    ``lay.format_version`` (module docstring)."""
    s, crc, n_rows, n_cols = lay.shards, lay.crc, *lay.n
    g.create_array(
        TILES, shape=(n_rows, n_cols), dtype="bytes", chunks=(1, 1), shards=s,
        fill_value=b"", compressors=None, dimension_names=("y", "x"),
        attributes=lay.attrs("codec tile strings"),
    )
    _create_masks(g, lay)
    if crc:
        if lay.crc_rule == CELL_RULE:  # the rule in the array's own attributes too (_crc_rule)
            crc_attrs = lay.attrs("CRC-32C of each written tile's cell (row, column as "
                                  "little-endian uint64) then string: binds each string to its "
                                  "grid cell", **{CRC_RULE: CELL_RULE})
        else:  # stores written before 2026-12-07
            crc_attrs = lay.attrs("CRC-32 of each written tile string (its last 4 bytes, "
                                  "little-endian): binds each string to its grid cell")
        g.create_array(
            CRC, shape=(n_rows, n_cols), dtype="uint32", chunks=s, fill_value=0,
            dimension_names=("y", "x"), compressors=crc, attributes=crc_attrs,
        )
    g.create_array(
        STATUS, shape=(n_rows, n_cols), dtype="uint8", chunks=s, fill_value=0,
        dimension_names=("y", "x"), compressors=crc or "auto",
        attributes=lay.attrs("tile status", flag_values=[int(v) for v in TileStatus],
                             flag_meanings=" ".join(v.name.lower() for v in TileStatus)),
    )
    g.create_array(
        CONSTANT, shape=(n_rows, n_cols, lay.count), dtype=lay.dtype,
        chunks=(*s, lay.count), fill_value=0, dimension_names=("y", "x", "band"),
        compressors=crc or "auto",
        attributes=lay.attrs("per-band value of DROPPED_CONSTANT tiles"),
    )
    ref = g.create_array(SPATIAL_REF, shape=(), dtype="int64", fill_value=0, dimension_names=())
    ref.attrs.update(cf.spatial_ref_attrs(crs, lay.grid.tile_index_transform))
    ref[...] = 0


def _create_masks(g: zarr.Group, lay: _Layout) -> None:
    """The validity masks: format 3 keeps one ``tile x tile`` boolean chunk per tile in the
    tiles' shards, formats 1 and 2 one zlib(packbits) string per tile."""
    s, crc, n_rows, n_cols = lay.shards, lay.crc, *lay.n
    if lay.format_version >= 3:
        t = lay.grid.tile
        g.create_array(
            MASKS, shape=(n_rows, n_cols, t, t), dtype="bool", chunks=(1, 1, t, t),
            shards=(*s, t, t), fill_value=False, compressors=[ZstdCodec(level=3), *crc],
            dimension_names=("y", "x", "tile_y", "tile_x"),
            attributes=lay.attrs("validity of every pixel of every tile "
                                 "(True = valid); all False for dropped and pending tiles"),
        )
    else:
        g.create_array(
            MASKS, shape=(n_rows, n_cols), dtype="bytes", chunks=(1, 1), shards=s,
            fill_value=b"", compressors=crc or None, dimension_names=("y", "x"),
            attributes=lay.attrs("validity masks of kept tiles with nodata "
                                 "(zlib(packbits(mask))); empty = all valid"),
        )


@dataclass(frozen=True)
class StoreLayout:
    """The format a new store is written in: what readers must know to check its tiles.

    Args:
        format_version: 3, or 2 / 1 to write an earlier layout (tests of old stores; 1 has no
            checksums at all).
        tile_version: the tile-string format version (:mod:`geocompress.codec.format`) the tiles
            are written in, recorded as ``tile_format_version`` among the digest-covered
            attributes; readers refuse a tile whose header says another (an edited version
            byte). Stores written before it record none and bind no version.
        crc_rule: how ``tile_crc`` binds each tile to its cell: :data:`CELL_RULE`, or
            :data:`TRAILER_RULE` to write the rule of stores created before 2026-12-07 (tests of
            old stores: it binds a string but not its cell, LAYOUT.md).
    """

    format_version: int = FORMAT_VERSION
    tile_version: int | None = None
    crc_rule: str = CELL_RULE


def _resume_hint(have: dict, asked: dict) -> str:
    """What resumes a store refused for other settings, where the refusal alone would not say:
    its model (a ladder store met by today's default) or the rate target it was coded at (the
    level a search found is not what a user asked for)."""
    stored_arch, target = have["arch"], have.get("config", {}).get("rate_control")
    if asked.get("arch") not in (None, stored_arch):
        return f"to resume it ask for its model (--arch {stored_arch} --quality {have['quality']:g}), "
    if target and target != asked.get("config", {}).get("rate_control"):
        return f"to resume it ask for its target (--target-{target['target']} {target['value']:g}), "
    return ""


class TileStore:
    """A geocompress store on disk. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, group: zarr.Group, path: Path, mode: str):
        self._group = group
        self.path = path
        self.mode = mode
        meta = dict(group.attrs[ATTR])
        self.meta: dict = meta
        self.grid = TileGrid.from_dict(meta["grid"])
        self.shard = int(meta["shard"])
        with _Quiet():
            self._tiles = group[TILES]
            self._status = group[STATUS]
            self._constant = group[CONSTANT]
            self._masks = group[MASKS]
            try:  # stores written before it have no per-tile CRC array (and no CRC key)
                self._crc = group[CRC] if meta.get(CRC) else None
            except KeyError:
                raise StoreIntegrityError(f"{path}: the store's '{CRC}' array is missing; "
                                          f"re-create the store from its source") from None
        self._crc_rule = _crc_rule(path, meta, group)

    # -- lifecycle ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        scene: SceneInfo,
        grid: TileGrid,
        codec_meta: dict,
        shard: int = 16,
        overwrite: bool = False,
        layout: "StoreLayout | None" = None,
        **layout_fields: Any,
    ) -> "TileStore":
        """Create an empty store (every tile PENDING), its status "in-progress" on disk before any array.

        Args:
            path: where; an existing *geocompress* store is replaced only with ``overwrite``, any other
                existing path is refused rather than deleted.
            scene: the source scene (size, dtype, bands, tags, checksum recorded for decoding).
            grid: the tile grid; its size must be the scene's.
            codec_meta: the codec's ``arch``, ``digest`` and ``quality`` (or their stored names
                ``model``, ``weights_digest``: :mod:`geocompress.store.identity`) and an optional
                ``config`` dict of codec settings, recorded as ``codec_config``.
            shard: tiles per shard side: the unit one writer owns.
            overwrite: replace an existing geocompress store.
            layout: the format to write (:class:`StoreLayout`; default: the current one).
            **layout_fields: :class:`StoreLayout` fields overriding ``layout``'s
                (``format_version=2``, ``tile_version=3``, ``crc_rule=TRAILER_RULE``).

        Returns:
            The store, open for writing (``r+``).

        Raises:
            ValueError: an unknown format, a missing codec field, ``shard`` < 1, or a grid of another
                size than the scene.
            StoreError: ``path`` exists and may not be replaced.
        """
        layout = _replace_fields(layout or StoreLayout(), **layout_fields)
        format_version, tile_version, crc_rule = layout.format_version, layout.tile_version, layout.crc_rule
        if format_version not in (1, 2, 3):
            raise ValueError(f"can write store formats 1, 2 and 3, not {format_version}")
        if crc_rule not in CRC_RULES:
            raise ValueError(f"unknown tile_crc rule {crc_rule!r}; one of {', '.join(CRC_RULES)}")
        path = Path(path)
        codec_meta = _checked_codec_meta(codec_meta)
        if shard < 1:
            raise ValueError(f"shard must be >= 1, got {shard}")
        if (grid.width, grid.height) != (scene.width, scene.height):
            raise ValueError(f"grid {grid.width}x{grid.height} does not match scene {scene.width}x{scene.height}")
        _clear_path(path, overwrite)
        meta = _root_meta(scene, grid, codec_meta, shard, format_version, tile_version)
        checked = format_version >= 2  # format 1 (tests of old stores) has no checksums at all
        if checked:
            meta[CRC] = True  # where each WRITTEN tile's string belongs, even while incomplete
            if crc_rule == CELL_RULE:  # under attrs_digest from here on, before any tile
                meta[CRC_RULE] = crc_rule
            meta["attrs_digest"] = attrs_digest(meta)  # again with the georef digests, below
        crs = grid.crs or scene.crs
        with _Quiet():
            g = zarr.open_group(str(path), mode="w-", zarr_format=3)
            # status "in-progress" is on disk before any array exists
            g.attrs.update({ATTR: meta, **zconv.group_attrs(crs, grid.transform, grid.height, grid.width)})
            _create_arrays(g, _Layout(grid, scene, shard, format_version, crc_rule), crs)
            if checked:  # the georeferencing as written (read back: what readers will see)
                meta[GEOREF] = _stored_georef(zarr.open_group(str(path), mode="r",
                                                              use_consolidated=False))
                meta["attrs_digest"] = attrs_digest(meta)
                g.attrs[ATTR] = meta
        return cls.open(path, mode="r+")

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> "TileStore":
        """Open an existing store, validating that it is one and its format version.

        Args:
            path: the store.
            mode: ``"r"`` or ``"r+"`` (to write blocks and complete it).

        Returns:
            The store.

        Raises:
            ValueError: another mode.
            StoreError: nothing there, not Zarr, or not a geocompress store.
            StoreVersionError: a store format this geocompress does not read.
            StoreIntegrityError: the root attributes or the georeferencing were edited or damaged.
        """
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not path.exists():
            raise StoreError(f"no geocompress store at {path} (path does not exist)")
        try:
            with _Quiet():
                g = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{path} is not a Zarr store: {exc}") from exc
        meta = g.attrs.get(ATTR)
        if not isinstance(meta, dict) or "format_version" not in meta:
            raise StoreError(f"{path} is a Zarr group but not a geocompress store (no '{ATTR}' attrs)")
        _check_version(path, meta, g)
        if meta["format_version"] >= 2 and meta.get("attrs_digest") != attrs_digest(meta):
            raise StoreIntegrityError(
                f"{path}: the store's root attributes ('{ATTR}': size, transform, nodata, dtype, "
                f"codec, ...) were edited or damaged after writing (digest mismatch); re-create "
                f"the store from its source")
        if GEOREF in meta:  # stores written before it: the grid in ATTR is still checked
            _check_georef(path, g, meta[GEOREF])
        return cls(g, path, mode)

    def verify(self) -> None:
        """Check the bookkeeping against the digest written when the store was completed, and
        every WRITTEN tile's string against the CRC recorded for its grid cell (complete or not).

        ``status``, ``constant`` and ``masks`` chunks carry crc32c, so a damaged chunk fails on
        read; a *deleted* chunk would read as its fill value, which only this digest catches.
        An incomplete store has no content digest yet, but each block's ``tile_crc`` values are
        written with the block, so two tile strings swapped in it are still caught; under the
        store's ``tile_crc_rule`` :data:`CELL_RULE` the value binds the cell too, so a tile moved
        to another cell together with its ``tile_crc`` chunk is caught as well (stores written
        before it: :data:`TRAILER_RULE`, which binds the string but not its cell, LAYOUT.md).

        Raises:
            StoreIntegrityError: naming the array, or the tiles whose strings are not the ones
                written in their cells.
        """
        want = self.meta.get("content_digest")
        if self.meta.get("format_version", 1) < 2:
            warnings.warn(f"{self.path} was written by an older geocompress (store format 1): its "
                          f"bookkeeping carries no checksums and cannot be verified", stacklevel=2)
            return
        if want is None and self._crc is None:
            return  # not complete yet, and written before per-tile CRCs: nothing to compare
        unbound: list[tuple[int, int]] = []
        try:
            got = self._content_digest(unbound)
        except StoreIntegrityError:  # names the array
            raise
        except Exception as exc:  # noqa: BLE001 - a crc32c failure or unreadable chunk
            raise StoreIntegrityError(f"{self.path}: a bookkeeping chunk is damaged ({exc})") from exc
        bad = [name for name in want or {} if want[name] != got.get(name)]
        if bad:
            raise StoreIntegrityError(
                f"{self.path}: {', '.join(repr(b) for b in bad)} no longer match(es) what was "
                f"written (chunks deleted, replaced or altered); re-create the store from its source")
        if unbound:
            cells = ", ".join(f"({r}, {c})" for r, c in unbound[:5])
            cells += " ..." if len(unbound) > 5 else ""
            raise StoreIntegrityError(
                f"{self.path}: {len(unbound)} written tile(s) hold strings other than the ones "
                f"written in their cells ({cells}: their check value differs from the '{CRC}' "
                f"array: tiles swapped, moved, replaced or deleted); re-create the store from its "
                f"source")

    def _content_digest(self, unbound: list[tuple[int, int]] | None = None) -> dict[str, str]:
        """The digest of the bookkeeping (see LAYOUT.md); appends to ``unbound`` the WRITTEN
        tiles whose check value (the store's ``tile_crc_rule``) is not the one recorded for
        their cell (stores with a ``tile_crc`` array), at no extra read of the strings."""
        status = self.status()
        out = {STATUS: hashlib.sha256(status.tobytes()).hexdigest(),
               CONSTANT: hashlib.sha256(np.ascontiguousarray(self.constants()).tobytes()).hexdigest()}
        h, lengths, crcs = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
        boolean = self._boolean_masks
        for rs, cs in self.shard_blocks():
            if boolean:
                h.update(np.packbits(self.read_valid(rs, cs), axis=None).tobytes())
            else:
                for m in self.read_masks(rs, cs).ravel():
                    h.update(len(m).to_bytes(4, "little") + bytes(m))
            block = self.read_strings(rs, cs)
            if unbound is not None and self._crc is not None:
                recorded = np.asarray(_read(self.path, CRC, self._crc, (rs, cs)), np.uint32)
                written = status[rs, cs] == TileStatus.WRITTEN
                wrong = written & (recorded != _string_crcs(block, self._crc_rule, rs.start,
                                                            cs.start, empty=True))
                unbound.extend((rs.start + int(i), cs.start + int(j))
                               for i, j in zip(*np.nonzero(wrong)))
            strings = block.ravel()
            lengths.update(np.array([len(t) for t in strings], np.uint32).tobytes())
            # each string's own CRC-32 (its last 4 bytes), in grid order: two strings swapped or
            # one replaced by another of the same length change it, at no extra read
            crcs.update(b"".join(bytes(t[-4:]).rjust(4, b"\0") for t in strings))
        out[MASKS] = h.hexdigest()
        out[TILES] = lengths.hexdigest()  # per-tile lengths: a deleted tile shard reads as b""
        out[TILES_CRC] = crcs.hexdigest()  # stores completed before this key verify without it
        return out

    # -- metadata -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)`` of the tile grid."""
        return self.grid.shape

    @property
    def is_complete(self) -> bool:
        """Whether every tile is final and :meth:`mark_complete` ran."""
        return self.meta.get("status") == "complete"

    @property
    def codec(self) -> dict:
        """The codec that wrote the store, in the codec's vocabulary: ``arch``, ``digest``,
        ``quality`` and ``config`` (its settings: halo, bits, filter, rate control, ...)."""
        m = from_stored(self.meta)
        return {**{k: m[k] for k in IDENTITY}, "config": m.get("codec_config", {})}

    @property
    def codec_meta(self) -> dict:
        """:attr:`codec` under the names the store keeps them (``model``, ``weights_digest``,
        ``quality``, ``config``), as stores have always returned it."""
        return to_stored(self.codec)

    def check_compatible(
        self, scene_checksum: str, codec_meta: dict, tile: int | None = None, stride: int | None = None
    ) -> None:
        """Raise :class:`StoreMismatchError` naming every setting that differs.

        The pipeline calls this before resuming into an existing store and
        refuses (unless ``--overwrite``) when anything differs.

        Args:
            scene_checksum: the source's checksum now.
            codec_meta: the codec asked for, in either vocabulary; ``config``, ``tile`` and
                ``stride`` are compared when present.
            tile: the tile size asked for (unless ``codec_meta`` has one).
            stride: the stride asked for (unless ``codec_meta`` has one).

        Raises:
            StoreMismatchError: a setting differs.
        """
        m, have = self.meta, self.codec
        codec_meta = from_stored(codec_meta)
        want = {
            "source checksum": (m["source_checksum"], scene_checksum),
            "model": (have["arch"], codec_meta.get("arch")),
            "weights digest": (have["digest"], codec_meta.get("digest")),
            "quality": (have["quality"], codec_meta.get("quality")),
        }
        if "config" in codec_meta:
            # the transforms' precision is not a property of a store (stores written before it
            # was dropped from the config still list it): any mode resumes or decodes any store
            stored = {k: v for k, v in have["config"].items() if k != "precision"}
            asked = {k: v for k, v in codec_meta["config"].items() if k != "precision"}
            want["codec config"] = (stored, asked)
        tile = codec_meta.get("tile", tile)
        stride = codec_meta.get("stride", stride)
        if tile is not None:
            want["tile size"] = (m["tile"], tile)
        if stride is not None:
            want["stride"] = (m["stride"], stride)
        diffs = [f"{k}: store has {a!r}, requested {b!r}" for k, (a, b) in want.items() if a != b]
        if diffs:
            resume = _resume_hint(have, codec_meta)
            raise StoreMismatchError(
                f"{self.path} was made with other settings ({'; '.join(diffs)}); "
                f"{resume}use --overwrite to replace it or choose another output path"
            )

    # -- blocks ---------------------------------------------------------------------
    def shard_blocks(self) -> Iterator[tuple[slice, slice]]:
        """(row_slice, col_slice) of every shard block, row-major. One writer per block.

        Yields:
            ``(rows, cols)`` slices.
        """
        n_rows, n_cols = self.shape
        for r in range(0, n_rows, self.shard):
            for c in range(0, n_cols, self.shard):
                yield slice(r, min(r + self.shard, n_rows)), slice(c, min(c + self.shard, n_cols))

    def pending_blocks(self) -> Iterator[tuple[slice, slice]]:
        """Shard blocks that still hold PENDING tiles (what a resumed run must do).

        Yields:
            ``(rows, cols)`` slices.
        """
        status = self.status()
        for rs, cs in self.shard_blocks():
            if (status[rs, cs] == TileStatus.PENDING).any():
                yield rs, cs

    def _check_block(self, rows: slice, cols: slice) -> tuple[slice, slice]:
        n_rows, n_cols = self.shape
        out = []
        for sl, n, name in ((rows, n_rows, "row"), (cols, n_cols, "col")):
            start, stop, step = sl.indices(n)
            if step != 1 or start % self.shard or not (stop % self.shard == 0 or stop == n) or stop <= start:
                raise ValueError(
                    f"{name} slice {sl} is not shard-aligned (shard {self.shard}, size {n}); "
                    "write whole blocks from shard_blocks()"
                )
            out.append(slice(start, stop))
        return out[0], out[1]

    def write_block(
        self,
        rows: slice,
        cols: slice,
        strings: np.ndarray,
        status: np.ndarray,
        constants: np.ndarray | None = None,
        masks: np.ndarray | None = None,
    ) -> None:
        """Write one whole shard-aligned block: tile strings, masks, constants, then status.

        ``strings`` is a 2-D object array of ``bytes`` (``None`` for dropped
        tiles), ``status`` the matching uint8 :class:`TileStatus` codes (no
        PENDING), ``constants`` an optional (h, w, count) array of per-band
        values used where status is DROPPED_CONSTANT.

        Args:
            rows: the block's tile rows (shard-aligned).
            cols: the block's tile columns (shard-aligned).
            strings: tile strings.
            status: final status codes.
            constants: per-band values of DROPPED_CONSTANT tiles.
            masks: encoded validity masks of kept tiles (``b""`` / None = all valid).

        Raises:
            StoreError: the store is open read-only.
            ValueError: a block that is not shard-aligned, shapes that differ, a non-final status, or
                strings that disagree with their status.
        """
        if self.mode != "r+":
            raise StoreError(f"{self.path} is open read-only")
        rows, cols = self._check_block(rows, cols)
        shape = (rows.stop - rows.start, cols.stop - cols.start)
        status = np.asarray(status, dtype=np.uint8)
        if status.shape != shape or np.shape(strings) != shape:
            raise ValueError(f"block {shape} needs strings/status of that shape, "
                             f"got {np.shape(strings)} / {status.shape}")
        if not np.isin(status, [s for s in TileStatus if s.is_final]).all():
            raise ValueError("status must be final (WRITTEN or DROPPED_*) for every tile of a block")
        cshape = (*shape, int(self.meta["count"]))
        if constants is None:
            if (status == TileStatus.DROPPED_CONSTANT).any():
                raise ValueError("block has DROPPED_CONSTANT tiles: pass their per-band constants")
            constants = np.zeros(cshape, dtype=self.meta["dtype"])
        constants = np.asarray(constants)
        if constants.shape != cshape:
            raise ValueError(f"constants must have shape {cshape}, got {constants.shape}")
        constants = constants.astype(self.meta["dtype"])
        out = np.empty(shape, dtype=object)
        for (i, j), s in np.ndenumerate(strings):
            written = status[i, j] == TileStatus.WRITTEN
            if written and not isinstance(s, (bytes, bytearray, memoryview)):
                raise ValueError(f"tile ({rows.start + i}, {cols.start + j}) is WRITTEN but has no bytes")
            if written and len(s) == 0:
                raise ValueError(f"tile ({rows.start + i}, {cols.start + j}) is WRITTEN with an empty string")
            if not written and s not in (None, b""):
                raise ValueError(f"tile ({rows.start + i}, {cols.start + j}) is dropped but has bytes")
            out[i, j] = bytes(s) if written else b""
        mask_out = np.full(shape, b"", dtype=object)
        if masks is not None:
            if np.shape(masks) != shape:
                raise ValueError(f"masks must have shape {shape}, got {np.shape(masks)}")
            for (i, j), m in np.ndenumerate(masks):
                mask_out[i, j] = bytes(m) if m else b""
        if self._boolean_masks:  # encoded masks travel between tasks; the store keeps booleans
            t = self.grid.tile
            kept = np.isin(status, (TileStatus.WRITTEN, TileStatus.DROPPED_CONSTANT))
            mask_out = np.zeros((*shape, t, t), bool)
            for i, j in zip(*np.nonzero(kept)):
                blob = b"" if masks is None else (bytes(masks[i, j]) if masks[i, j] else b"")
                mask_out[i, j] = decode_mask(blob, (t, t))
        with _Quiet():
            self._tiles[rows, cols] = out
            if self._crc is not None:  # before the status: a block is bound once it is final
                self._crc[rows, cols] = _string_crcs(out, self._crc_rule, rows.start, cols.start)
            self._masks[rows, cols] = mask_out
            self._constant[rows, cols, :] = constants  # always: no stale values from an earlier run
            self._status[rows, cols] = status  # last: marks the block done

    # -- reads ----------------------------------------------------------------------
    def read_strings(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """2-D object array of tile strings (``b""`` where no tile is stored).

        Always reads with slices: zarr 3.1 strips trailing NUL bytes on scalar
        reads of variable-length bytes (``a[i, j]``), slice reads are exact.

        Args:
            rows: tile rows.
            cols: tile columns.

        Returns:
            The strings.

        Raises:
            TypeError: an index that is not a slice.
            StoreIntegrityError: a damaged chunk.
        """
        if not isinstance(rows, slice) or not isinstance(cols, slice):
            raise TypeError("read_strings takes slices; use read_string(row, col) for one tile")
        out = _read(self.path, TILES, self._tiles, (rows, cols))
        return np.asarray(out, dtype=object)

    @property
    def _boolean_masks(self) -> bool:
        return int(self.meta.get("format_version", 1)) >= 3

    def read_valid(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """(rows, cols, tile, tile) booleans: which pixels of each tile are valid, as stored
        (False for dropped and pending tiles), whatever the store format.

        Args:
            rows: tile rows.
            cols: tile columns.

        Returns:
            The masks.
        """
        if self._boolean_masks:
            return np.asarray(_read(self.path, MASKS, self._masks, (rows, cols, slice(None), slice(None))),
                              dtype=bool)
        t = self.grid.tile
        blobs = self.read_masks(rows, cols)
        kept = np.isin(self.status(rows, cols), (TileStatus.WRITTEN, TileStatus.DROPPED_CONSTANT))
        out = np.zeros((*blobs.shape, t, t), bool)
        for i, j in zip(*np.nonzero(kept)):
            out[i, j] = decode_mask(bytes(blobs[i, j]), (t, t))
        return out

    def read_masks(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """2-D object array of encoded validity masks (``b""`` = all valid, and for tiles
        that are not kept); slice reads only.

        Args:
            rows: tile rows.
            cols: tile columns.

        Returns:
            The encoded masks.
        """
        if self._boolean_masks:
            valid = self.read_valid(rows, cols)
            kept = np.isin(self.status(rows, cols), (TileStatus.WRITTEN, TileStatus.DROPPED_CONSTANT))
            out = np.full(valid.shape[:2], b"", dtype=object)
            for i, j in zip(*np.nonzero(kept)):
                out[i, j] = encode_mask(valid[i, j])
            return out
        return np.asarray(_read(self.path, MASKS, self._masks, (rows, cols)), dtype=object)

    def read_string(self, row: int, col: int) -> bytes:
        """One tile's string (read through a 1x1 slice, see :meth:`read_strings`).

        Args:
            row: tile row.
            col: tile column.

        Returns:
            The string (``b""`` where none is stored).
        """
        return bytes(self.read_strings(slice(row, row + 1), slice(col, col + 1))[0, 0])

    def status(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """uint8 :class:`TileStatus` codes.

        Args:
            rows: tile rows.
            cols: tile columns.

        Returns:
            The codes.
        """
        return np.asarray(_read(self.path, STATUS, self._status, (rows, cols)), dtype=np.uint8)

    def constants(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """(h, w, count) per-band values (meaningful where status is DROPPED_CONSTANT).

        Args:
            rows: tile rows.
            cols: tile columns.

        Returns:
            The values, in the source dtype.
        """
        return np.asarray(_read(self.path, CONSTANT, self._constant, (rows, cols, slice(None))))

    def status_counts(self) -> dict[str, int]:
        """Number of tiles per status name.

        Returns:
            Every status name, with 0 for those absent.
        """
        codes = self.status()
        return {s.name: int((codes == s).sum()) for s in TileStatus}

    def nbytes_tiles(self) -> int:
        """Total length of all stored tile strings (the compressed payload).

        Returns:
            Bytes.
        """
        total = 0
        for rs, cs in self.shard_blocks():
            total += sum(len(s) for s in self.read_strings(rs, cs).ravel())
        return total

    # -- completion -----------------------------------------------------------------
    def mark_complete(self) -> None:
        """Flip the root status to "complete"; refuses while tiles are PENDING.

        Raises:
            StoreError: the store is read-only, or tiles are still PENDING.
        """
        if self.mode != "r+":
            raise StoreError(f"{self.path} is open read-only")
        pending = int((self.status() == TileStatus.PENDING).sum())
        if pending:
            raise StoreError(f"cannot mark {self.path} complete: {pending} tiles still PENDING")
        meta = {**self.meta, "status": "complete", "completed": _now()}
        if meta.get("format_version", 1) >= 2:
            meta["content_digest"] = self._content_digest()
            meta["attrs_digest"] = attrs_digest(meta)
        self._group.attrs[ATTR] = meta
        self.meta = meta
        # the arrays' metadata in the root document: xarray / zarr open a finished store with one
        # read (and without xarray's "failed to open with consolidated metadata" warning)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            zarr.consolidate_metadata(str(self.path), zarr_format=3)


__all__ = ["FORMAT_VERSION", "StoreLayout", "TileStore"]
