"""Open and validate a source scene; read one tile at a time.

A *scene* is either one raster file (any GDAL format, typically GeoTIFF) or
a **band stack**: a list of single- or multi-band files sharing exactly one
pixel grid (size, transform, CRS) and dtype, e.g. Landsat ``B4, B3, B2``.
Bands are numbered 1..count across the files in list order. (A list of paths
was chosen over writing a VRT: nothing is written next to the data, and the
checksum covers the real files.)

Reading never loads the whole scene: :func:`read_tile` reads only the tile's
window clipped to the scene, then pads. Padding outside the scene repeats the
edge pixels (``np.pad(mode="edge")``), which a learned codec compresses far
better than a hard step to zeros; the padded area is marked invalid.

Validity comes from GDAL's dataset mask (``dataset_mask``), which combines, in
order of precedence, an internal/sidecar mask or alpha band, else nodata (a
pixel is invalid only when *all* bands equal nodata), else all-valid. Alpha
bands are kept as ordinary data bands (the store holds every band, so a
round trip gives back the same band count); they only also drive validity.
For a band stack a pixel is valid if any file's mask says valid (the same
"across all bands" rule GDAL applies within one file).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.io import DatasetReader
from rasterio.windows import Window

from geocompress.geo.checksum import sha256_files
from geocompress.geo.errors import (
    EmptyRasterError,
    MissingCRSError,
    NoBandsError,
    PaletteError,
    PerBandNodataError,
    SceneNotFoundError,
    SceneReadError,
    SceneStackMismatchError,
    SceneUnreadableError,
    UnsupportedDtypeError,
)
from geocompress.geo.grid import TileGrid

SUPPORTED_DTYPES = ("uint8", "uint16")

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class SceneInfo:
    """Everything about a source scene that the store records (no pixels).

    ``checksum`` is the hex sha256 of the file bytes (see
    :mod:`geocompress.geo.checksum`); ``file_size`` is the total byte size.
    """

    paths: tuple[Path, ...]
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS
    transform: Affine
    nodata: float | None
    band_names: tuple[str, ...]
    colorinterp: tuple[str, ...]
    has_mask: bool
    file_size: int
    checksum: str
    # what the bands mean, carried to the rebuilt GeoTIFF: per-band scale / offset / unit, and the
    # dataset's own tags (acquisition time, sensor, processing level ...)
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    units: tuple[str, ...] = ()
    tags: dict = field(default_factory=dict)
    declared_bits: int | None = None  # GDAL's NBITS (e.g. 12 for a 12-bit sensor in uint16)
    # as the source has them, for the rebuilt raster: band descriptions (empty ones stay empty;
    # band_names invents band_1.. for the STAC item and xarray), band-level tags, and the
    # dataset's tags in other metadata domains (RPC, IMAGERY, a vendor's own ...)
    descriptions: tuple[str, ...] = ()
    band_tags: tuple[dict, ...] = ()
    tag_domains: dict = field(default_factory=dict)
    # each band's tags in other metadata domains ({domain: {key: value}}, {} for none)
    band_tag_domains: tuple[dict, ...] = ()
    # per band: an alpha band holding only 0 and opaque (a pure mask, rebuilt from the stored
    # mask on decode); () until compress has looked (:func:`alpha_masks`)
    alpha_is_mask: tuple[bool, ...] = ()

    @property
    def path(self) -> Path:
        """The (first) source file."""
        return self.paths[0]

    @property
    def name(self) -> str:
        """Short source name: file stem, or the folder name for a band stack."""
        if len(self.paths) == 1:
            return self.paths[0].stem
        return self.paths[0].parent.name or self.paths[0].stem

    @property
    def is_stack(self) -> bool:
        """Whether the scene is a stack of single-band files rather than one file."""
        return len(self.paths) > 1

    def grid(self, tile: int = 256, stride: int | None = None) -> TileGrid:
        """The tile grid of this scene.

        Args:
            tile: tile size in pixels.
            stride: step between tiles (default ``tile``).

        Returns:
            The grid over the scene's pixels, in its CRS.
        """
        return TileGrid.from_dataset(self, tile=tile, stride=stride)


def _as_paths(source: PathLike | Sequence[PathLike]) -> tuple[Path, ...]:
    if isinstance(source, (str, os.PathLike)):
        return (Path(source),)
    paths = tuple(Path(p) for p in source)
    if not paths:
        raise SceneNotFoundError("empty list of scene files")
    return paths


def _open(path: Path) -> DatasetReader:
    if not path.exists():
        raise SceneNotFoundError(f"scene file not found: {path}")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneUnreadableError(f"cannot read {path} as a raster: {exc}") from exc


def validate_dataset(ds: Any, label: str) -> None:
    """Raise a :class:`SceneError` subclass if ``ds`` cannot be compressed.

    Args:
        ds: an open rasterio dataset.
        label: how messages name it (its path).

    Raises:
        SceneError: no bands, an empty raster, an unsupported dtype or no CRS (the subclass says
            which).
    """
    if ds.count < 1:
        raise NoBandsError(f"{label} has no raster bands")
    if ds.width < 1 or ds.height < 1:
        raise EmptyRasterError(f"{label} is empty ({ds.width}x{ds.height} pixels)")
    bad = sorted({d for d in ds.dtypes if d not in SUPPORTED_DTYPES})
    if bad:
        raise UnsupportedDtypeError(
            f"{label} has dtype {', '.join(bad)}; only uint8 and uint16 are supported "
            "(rescale/convert first, e.g. gdal_translate -ot UInt16 -scale)"
        )
    if len(set(ds.dtypes)) > 1:
        raise UnsupportedDtypeError(f"{label} mixes band dtypes {sorted(set(ds.dtypes))}")
    _check_lossy_codable(ds, label)
    if ds.crs is None and getattr(ds, "gcps", ([], None))[0]:
        raise MissingCRSError(
            f"{label} is georeferenced only by ground control points; warp it to a grid "
            "first, e.g. `gdalwarp -t_srs EPSG:32618 in.tif out.tif`"
        )
    if ds.crs is None:
        raise MissingCRSError(
            f"{label} has no CRS (coordinate reference system). Assign one, e.g. "
            "`gdal_edit.py -a_srs EPSG:32618 file.tif` or, in Python, "
            "`rioxarray.open_rasterio(p).rio.write_crs('EPSG:32618').rio.to_raster(out)`"
        )


def _check_lossy_codable(ds: Any, label: str) -> None:
    """Refuse, before any work, what a store cannot give back: palette bands and per-band nodata.

    Args:
        ds: an open dataset.
        label: the file's name for the message.

    Raises:
        PaletteError: a band has a colour table: its values are class indices, which lossy coding
            changes (and the table would be lost).
        PerBandNodataError: the bands disagree on nodata: a store keeps one validity mask per
            pixel and one nodata value for all bands, so each band's own validity would be lost.
    """
    from rasterio.enums import ColorInterp

    palette = [b for b, ci in enumerate(getattr(ds, "colorinterp", ()), 1) if ci == ColorInterp.palette]
    if palette:
        raise PaletteError(
            f"{label}: band {palette[0]} is a palette (colour-table) band of class indices, which "
            f"lossy coding would change (and its colour table would be lost); expand it to colours "
            f"first (gdal_translate -expand rgb) or keep it with a lossless format")
    nodatas = list(getattr(ds, "nodatavals", ()) or ())
    if len({str(v) for v in nodatas}) > 1:
        per_band = ", ".join(f"band {b}: {v if v is None else f'{v:g}'}" for b, v in enumerate(nodatas, 1))
        raise PerBandNodataError(
            f"{label} has a nodata value per band ({per_band}); a store keeps one nodata value "
            f"and one validity mask for all bands: give the bands one value (gdal_translate "
            f"-a_nodata) or split them into single-band scenes")


def _band_names(ds: DatasetReader, path: Path, stacked: bool, first_band: int) -> list[str]:
    names = []
    for i, desc in enumerate(ds.descriptions):
        if desc:
            names.append(desc)
        elif stacked and ds.count == 1:
            names.append(path.stem)
        else:
            names.append(f"band_{first_band + i}")
    return names


# metadata domains GDAL manages itself (or XML / JSON documents, not key=value tags)
_GDAL_DOMAINS = ("IMAGE_STRUCTURE", "DERIVED_SUBDATASETS", "SUBDATASETS", "COLOR_PROFILE")


def _domains(ds: DatasetReader, band: int = 0) -> dict[str, dict[str, str]]:
    """The tags of ``ds`` (or of its ``band``) in every domain but the default and GDAL's own."""
    out = {}
    for ns in (ds.tag_namespaces(band) if band else ds.tag_namespaces()) or ():
        if not ns or ns in _GDAL_DOMAINS or ns.startswith(("xml:", "json:")):
            continue
        tags = ds.tags(band, ns=ns) if band else ds.tags(ns=ns)
        if tags:
            out[str(ns)] = {str(k): str(v) for k, v in tags.items()}
    return out


def _band_meta(ds: DatasetReader) -> tuple[list[dict], list[dict], set[int]]:
    """Each band's tags in the default domain and in the others, and the NBITS the bands
    declare (GDAL's NBITS is a band-level tag)."""
    bands = range(1, ds.count + 1)
    tags = [{str(k): str(v) for k, v in ds.tags(b).items()} for b in bands]
    declared = [str(ds.tags(b, ns="IMAGE_STRUCTURE").get("NBITS") or "") for b in bands]
    return tags, [_domains(ds, b) for b in bands], {int(d) for d in declared if d.isdigit()}


def _has_mask(ds: DatasetReader) -> bool:
    return any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)


def open_scene(source: PathLike | Sequence[PathLike]) -> SceneInfo:
    """Validate a scene (file or band stack) and describe it. Reads no pixels.

    Raises :class:`~geocompress.geo.errors.SceneError` subclasses with clear
    messages: missing/unreadable file, no CRS, empty raster, unsupported
    dtype, no bands, or stack files that do not share one grid.

    Args:
        source: a file, or the files of a band stack in band order.

    Returns:
        The scene's description (size, CRS, dtype, bands, tags, checksum).

    Raises:
        SceneError: see above.
    """
    paths = _as_paths(source)
    files, ref = [], None
    for path in paths:
        with _open(path) as ds:
            validate_dataset(ds, str(path))
            sig = (ds.width, ds.height, tuple(ds.transform), ds.crs, ds.dtypes[0])
            ref = ref or sig
            differ = [f"{name} {got} vs {want}" for name, got, want in (
                ("size", f"{sig[0]}x{sig[1]}", f"{ref[0]}x{ref[1]}"),
                ("transform", sig[2], ref[2]), ("CRS", sig[3], ref[3]), ("dtype", sig[4], ref[4]))
                if got != want]
            if differ:
                raise SceneStackMismatchError(
                    f"{path} does not match {paths[0]}: band-stack files must share size, "
                    f"transform, CRS and dtype ({'; '.join(map(str, differ))})")
            files.append(_file_meta(ds, path, len(paths) > 1, sum(f["count"] for f in files) + 1))
    nodatas = {f["nodata"] for f in files}
    if len(nodatas) > 1:
        raise SceneStackMismatchError(f"band-stack files disagree on nodata: {sorted(map(str, nodatas))}")
    width, height, transform, crs, dtype = ref

    def joined(key: str) -> tuple:
        return tuple(v for f in files for v in f[key])

    tags, domains = {}, {}
    for f in reversed(files):  # the first file's tags win in a stack
        tags, domains = {**tags, **f["tags"]}, {**domains, **f["domains"]}
    nbits = set().union(*(f["nbits"] for f in files))
    return SceneInfo(
        paths=tuple(p.resolve() for p in paths), width=width, height=height,
        count=sum(f["count"] for f in files), dtype=dtype, crs=crs,
        transform=Affine(*transform[:6]), nodata=nodatas.pop(), band_names=joined("names"),
        colorinterp=joined("interp"), has_mask=any(f["has_mask"] for f in files),
        file_size=sum(p.stat().st_size for p in paths), checksum=sha256_files(paths),
        scales=joined("scales"), offsets=joined("offsets"), units=joined("units"),
        tags={str(k): str(v) for k, v in tags.items() if k != "AREA_OR_POINT"},
        declared_bits=max(nbits) if nbits else None, descriptions=joined("descriptions"),
        band_tags=joined("band_tags"), tag_domains=domains, band_tag_domains=joined("band_domains"),
    )


def _file_meta(ds, path: Path, stacked: bool, first_band: int) -> dict:
    """What one file of a scene (or of a band stack) says about its bands."""
    band_tags, band_domains, declared = _band_meta(ds)
    return {"names": _band_names(ds, path, stacked, first_band),
            "interp": [c.name for c in ds.colorinterp], "scales": [float(v) for v in ds.scales],
            "offsets": [float(v) for v in ds.offsets], "units": [u or "" for u in ds.units],
            "descriptions": [d or "" for d in ds.descriptions], "band_tags": band_tags,
            "band_domains": band_domains, "nbits": set(declared), "tags": dict(ds.tags()),
            "domains": _domains(ds), "has_mask": _has_mask(ds), "nodata": ds.nodata,
            "count": ds.count}


def alpha_masks(scene: SceneInfo, opaque: int) -> tuple[bool, ...]:
    """Per band, whether it is an alpha band that is a pure mask: every value 0 or ``opaque``.

    Such a band says no more than the validity mask a store keeps, so a decoder may rebuild it
    exactly from that mask; any other alpha band (partial transparency, or a data band such as
    NIR marked alpha) must come back as its decoded values. Each alpha band is read alone, one
    block window at a time (never the whole raster), and the pass over it stops at its first
    other value.

    Args:
        scene: the scene (:func:`open_scene`).
        opaque: the band's opaque value: the top of the scene's bit depth (255 for uint8,
            ``2 ** bits - 1`` for uint16 coded at ``bits``).

    Returns:
        One flag per band; False for every band not marked alpha.
    """
    flags: list[bool] = []
    for path in scene.paths:
        with _open(path) as ds:
            for b in range(1, ds.count + 1):
                alpha = scene.colorinterp[len(flags)] == "alpha"
                flags.append(alpha and _only_values(ds, b, opaque))
    return tuple(flags)


def _only_values(ds: DatasetReader, band: int, opaque: int) -> bool:
    """Whether every value of ``band`` is 0 or ``opaque``, read by the band's block windows."""
    for _, win in ds.block_windows(band):
        values = ds.read(band, window=win)
        if not ((values == 0) | (values == opaque)).all():
            return False
    return True


class SceneReader:
    """Holds a scene's file handles open for many :meth:`read_tile` calls.

    rasterio datasets are not thread-safe: use one reader per thread/process
    (e.g. one per dask task), never share one across threads.
    """

    def __init__(self, source: SceneInfo | PathLike | Sequence[PathLike] | DatasetReader | Sequence[DatasetReader]):
        self._stack = ExitStack()
        self.datasets: list[DatasetReader] = []
        if isinstance(source, DatasetReader):
            self.datasets = [source]
        elif isinstance(source, (list, tuple)) and source and isinstance(source[0], DatasetReader):
            self.datasets = list(source)  # caller owns them
        else:
            paths = source.paths if isinstance(source, SceneInfo) else _as_paths(source)  # type: ignore[arg-type]
            self.datasets = [self._stack.enter_context(_open(p)) for p in paths]
        # global band b (1-based) -> (dataset index, local band index)
        self._band_map = [(i, b) for i, ds in enumerate(self.datasets) for b in range(1, ds.count + 1)]

    @property
    def count(self) -> int:
        """Bands over all files of the scene."""
        return len(self._band_map)

    def __enter__(self) -> "SceneReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every file of the scene."""
        self._stack.close()

    def read_bands(self, bands: Sequence[int], win: Window) -> np.ndarray:
        """``(len(bands), h, w)`` pixels of ``win``; the bands of one file in one read (a
        pixel-interleaved JPEG GeoTIFF read band by band decodes its blocks once per band: 3x
        slower), the same values.

        Args:
            bands: 1-based global band numbers, in the order wanted.
            win: the window, inside the scene.

        Returns:
            The pixels in the source dtype.
        """
        runs: list[tuple[int, list[int]]] = []  # (dataset, its local bands), in band order
        for b in bands:
            i, local = self._band_map[b - 1]
            if runs and runs[-1][0] == i:
                runs[-1][1].append(local)
            else:
                runs.append((i, [local]))
        parts = [self.datasets[i].read(local, window=win) for i, local in runs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read_tile_checked(self, grid: TileGrid, row: int, col: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read_tile` of every band, a failed read named by file and tile.

        Args:
            grid: the scene's tile grid.
            row: tile row.
            col: tile column.

        Returns:
            ``(pixels, valid)``.

        Raises:
            SceneReadError: GDAL could not read the tile (a truncated or damaged file).
        """
        failed = None
        try:
            return self.read_tile(grid, row, col)
        except rasterio.errors.RasterioError as e:
            failed = str(e)
        # raised outside the handler: no unpicklable GDAL context travels with it from a worker
        names = ", ".join(str(ds.name) for ds in self.datasets)
        raise SceneReadError(f"{names}: reading tile ({row}, {col}) failed (truncated or damaged "
                             f"file?): {failed}")

    def read_tile(
        self, grid: TileGrid, row: int, col: int, bands: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(pixels, valid)``: (C, tile, tile) source dtype, (tile, tile) bool.

        Reads only the tile's in-scene window; pads by edge replication.
        ``bands`` are 1-based global band numbers (default: all).

        Args:
            grid: the scene's tile grid.
            row: tile row.
            col: tile column.
            bands: 1-based band numbers; None for all.

        Returns:
            ``(pixels, valid)``.

        Raises:
            IndexError: the tile is outside the grid.
        """
        win = grid.valid_window(row, col)
        h, w = int(win.height), int(win.width)
        bands = list(range(1, self.count + 1)) if bands is None else list(bands)
        for b in bands:
            if not 1 <= b <= self.count:
                raise IndexError(f"band {b} out of range 1..{self.count}")
        data = self.read_bands(bands, win)
        mask = np.zeros((h, w), dtype=bool)
        for ds in self.datasets:
            mask |= ds.dataset_mask(window=win) > 0
        pad = ((0, 0), (0, grid.tile - h), (0, grid.tile - w))
        pixels = np.pad(data, pad, mode="edge") if (h, w) != (grid.tile, grid.tile) else data
        valid = np.zeros((grid.tile, grid.tile), dtype=bool)
        valid[:h, :w] = mask
        return np.ascontiguousarray(pixels), valid

    def read_context(self, grid: TileGrid, row: int, col: int, context: int,
                     sides: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The tile with ``context`` pixels of its neighbours on each side (see _read_context).

        Args:
            grid: the scene's tile grid.
            row: tile row.
            col: tile column.
            context: pixels of neighbours on each side.
            sides: context actually wanted (top, bottom, left, right); default ``context`` each.

        Returns:
            ``C x (tile + top + bottom) x (tile + left + right)`` pixels in the source dtype.
        """
        return _read_context(self, grid, row, col, context, sides)


def _read_context(reader: "SceneReader", grid: TileGrid, row: int, col: int, context: int,
                  sides: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """The tile plus ``context`` pixels on each side (or ``sides``: top, bottom, left, right),
    (C, tile + top + bottom, tile + left + right): the part inside the scene read by window, the
    rest by edge replication, so that the whole scene behaves as if edge-replicated beyond its
    borders (as :meth:`SceneReader.read_tile` pads edge tiles)."""
    t = grid.tile
    top, bottom, left, right = sides if sides is not None else (int(context),) * 4
    y0, x0 = row * grid.step - top, col * grid.step - left
    y1, x1 = row * grid.step + t + bottom, col * grid.step + t + right
    ya, xa = max(0, y0), max(0, x0)
    yb, xb = min(grid.height, y1), min(grid.width, x1)
    win = Window(xa, ya, xb - xa, yb - ya)
    data = reader.read_bands(range(1, reader.count + 1), win)
    pad = ((0, 0), (ya - y0, y1 - yb), (xa - x0, x1 - xb))
    return np.ascontiguousarray(np.pad(data, pad, mode="edge"))


def read_tile(
    source: SceneInfo | PathLike | Sequence[PathLike] | DatasetReader | SceneReader,
    grid: TileGrid,
    row: int,
    col: int,
    bands: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read one tile (see :meth:`SceneReader.read_tile`).

    Convenience wrapper: opens and closes the files unless given an open
    dataset or :class:`SceneReader` (prefer those when reading many tiles).

    Args:
        source: a scene, its files, or an open dataset / reader.
        grid: the scene's tile grid.
        row: tile row.
        col: tile column.
        bands: 1-based band numbers; None for all.

    Returns:
        ``(pixels, valid)`` as :meth:`SceneReader.read_tile`.
    """
    if isinstance(source, SceneReader):
        return source.read_tile(grid, row, col, bands)
    with SceneReader(source) as reader:  # type: ignore[arg-type]
        return reader.read_tile(grid, row, col, bands)


__all__ = ["SceneInfo", "SceneReader", "alpha_masks", "open_scene", "read_tile", "validate_dataset",
           "SUPPORTED_DTYPES"]
