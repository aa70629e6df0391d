"""What a decoded scene is written as: driver, bands, data type, overviews, creation options.

GDAL's habits (``gdal_translate -of / -b / -ot / -co``, ``gdaladdo -r``): the driver follows the
output's extension unless named; the decoded pixels are first written to a tiled GeoTIFF beside
the output and then copied into the chosen format, so every driver gets the same pixels, and the
result (with any sidecar GDAL writes: ``.aux.xml``, world files, ``.msk``) appears atomically.

Validity is never dropped silently: a driver that can store neither the nodata value nor a mask
(JPEG) or that would change pixels it cannot flag is refused when the scene needs one, and a data
type that cannot hold the pixels (values clipped) or the nodata value is an error or a warning
that says how many pixels were clipped.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import rasterio
import rasterio.shutil
import rasterio.errors
from rasterio.enums import Resampling

# extension -> GDAL driver (GeoTIFFs become COGs unless cog=False)
DRIVERS = {".tif": "GTiff", ".tiff": "GTiff", ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG",
           ".jp2": "JP2OpenJPEG", ".webp": "WEBP", ".img": "HFA", ".nc": "netCDF", ".vrt": None}
# drivers that keep an internal per-dataset mask (others get nodata only)
MASKED_DRIVERS = {"GTiff", "COG"}
# drivers that cannot keep a nodata value either (lossy, no transparency)
NO_NODATA = {"JPEG", "WEBP"}
# drivers that hold only some band counts (GDAL's CreateCopy refuses the others, after decoding)
BAND_COUNTS = {"PNG": (1, 2, 3, 4), "JPEG": (1, 3, 4), "WEBP": (3, 4)}
# drivers that store the last band of these counts as alpha (transparency), not as data
ALPHA_COUNTS = {"PNG": (2, 4), "WEBP": (4,)}
# GeoTIFF / COG compressions that hold only some band counts and data types (GDAL refuses the
# others only when the first block is written, after the whole decode)
TIFF_CODEC_LIMITS = {"WEBP": ((3, 4), ("uint8",)), "JPEG": (None, ("uint8",))}
# drivers that hold 8-bit data only (GDAL refuses uint16 only when it writes, after the decode)
DRIVER_DTYPES = {"WEBP": ("uint8",), "JPEG": ("uint8",)}
# GeoTIFF / COG compressions that change pixel values (WEBP and JXL unless made lossless)
LOSSY_TIFF = {"JPEG": None, "WEBP": ("WEBP_LOSSLESS", "FALSE"), "JXL": ("JXL_LOSSLESS", "TRUE")}
LOSSLESS_JP2 = {"REVERSIBLE": "YES", "QUALITY": "100"}  # JPEG 2000's lossless (5/3) mode
DTYPES = ("uint8", "uint16", "int16", "uint32", "int32", "float32", "float64")
RESAMPLING = ("nearest", "average", "bilinear", "cubic", "lanczos", "mode", "gauss")

__all__ = ["DRIVERS", "DTYPES", "OutputSpec", "RESAMPLING", "cast_pixels", "check_band_count",
           "check_creation_options", "check_exact", "lossy_reason", "publish"]


@dataclass(frozen=True)
class OutputSpec:
    """How to write the decoded scene (see the module docstring).

    Args:
        driver: a GDAL driver name (``-of``); None: from the output's extension.
        cog: a GeoTIFF is written as a cloud-optimized GeoTIFF with overviews.
        creation_options: GDAL creation options (``--co``), checked before decoding.
        bands: the bands to write, 1-based, in this order (``-b``); None: all.
        dtype: the output data type (``-ot``); None keeps the source's.
        overviews: "auto" (the COG driver's, down to one block), "none", or explicit factors.
        resampling: of the overviews (GDAL's names).
        allow_lossy: a lossy format or option is written, with a warning, instead of refused.
    """

    driver: str | None = None
    cog: bool = True
    creation_options: dict[str, str] = field(default_factory=dict)
    bands: tuple[int, ...] | None = None
    dtype: str | None = None
    overviews: str | tuple[int, ...] = "auto"
    resampling: str = "average"
    allow_lossy: bool = False  # a lossy format / option: written with a warning, never silently

    def resolve(self, out: Path) -> "OutputSpec":
        """The spec with its driver decided from ``out``'s extension.

        Args:
            out: the output path.

        Returns:
            A resolved spec (driver named, creation option names upper-cased).

        Raises:
            ValueError: an extension that names no format, an unavailable driver, or an unknown
                dtype, resampling or overview setting (before any decoding).
        """
        driver = self.driver
        if driver is None:
            ext = out.suffix.lower()
            if ext not in DRIVERS or DRIVERS[ext] is None:
                raise ValueError(f"{out}: cannot tell the output format from {ext or 'no extension'!r}; "
                                 f"use one of {', '.join(k for k, v in DRIVERS.items() if v)} or "
                                 f"name a GDAL driver with --driver")
            driver = DRIVERS[ext]
        if driver == "COG":
            driver = "GTiff"
        elif driver != "GTiff":
            driver_supported(driver)
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"--dtype {self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.resampling not in RESAMPLING:
            raise ValueError(f"resampling {self.resampling!r}: choose one of {', '.join(RESAMPLING)}")
        if not isinstance(self.overviews, str):
            if not self.overviews or any(int(f) < 2 for f in self.overviews):
                raise ValueError(f"overview factors {self.overviews}: give integers >= 2, e.g. 2 4 8")
        elif self.overviews not in ("auto", "none"):
            raise ValueError(f"overviews {self.overviews!r}: 'auto', 'none' or factors")
        return replace(self, driver=driver,
                       creation_options={str(k).upper(): str(v) for k, v in self.creation_options.items()})


def driver_supported(driver: str) -> None:
    """Refuse a GDAL driver this GDAL does not have.

    Args:
        driver: the driver name.

    Raises:
        ValueError: naming the driver and GDAL's version.
    """
    with rasterio.Env() as env:
        drivers = env.drivers()
    if driver not in drivers:
        raise ValueError(f"GDAL driver {driver!r} is not available in this GDAL "
                         f"({rasterio.__gdal_version__})")


def check_validity(spec: OutputSpec, nodata: float | None, needs_mask: bool) -> None:
    """Refuse a format that would lose which pixels are valid.

    Args:
        spec: the resolved output spec.
        nodata: the scene's nodata value (None: none).
        needs_mask: validity is carried by a mask (no nodata value).

    Raises:
        ValueError: the driver keeps neither a mask nor, where the scene has one, a nodata value.
    """
    if spec.driver in MASKED_DRIVERS:
        return
    if needs_mask:
        raise ValueError(f"the scene marks valid pixels with a mask (no nodata value), which the "
                         f"{spec.driver} driver cannot store: write a GeoTIFF (.tif)")
    if nodata is not None and spec.driver in NO_NODATA:
        raise ValueError(f"the scene has nodata = {nodata:g}, which {spec.driver} (lossy, no "
                         f"nodata) would not keep: write a GeoTIFF (.tif) or PNG")


def check_band_count(spec: OutputSpec, count: int, dtype: str | None = None) -> None:
    """Refuse, before any decoding, a band count (or data type) the driver cannot write.

    Args:
        spec: the resolved output spec (its driver decided).
        count: the number of bands that would be written (after ``--bands``).
        dtype: the data type written, where known (GeoTIFF's ``COMPRESS=WEBP`` takes uint8 only).

    Raises:
        ValueError: the driver holds other band counts (PNG 1-4, JPEG 1, 3 or 4, WebP 3 or 4;
            GeoTIFF with COMPRESS=WEBP 3 or 4 bands of uint8): GDAL would refuse only after the
            whole scene was decoded, with a traceback.
    """
    method = spec.creation_options.get("COMPRESS", "").upper()
    if str(spec.driver) in ("GTiff", "COG") and method in TIFF_CODEC_LIMITS:
        counts, dtypes = TIFF_CODEC_LIMITS[method]
        if (counts is not None and count not in counts) or (dtype is not None and str(dtype) not in dtypes):
            held = f"{' or '.join(map(str, counts))} bands of " if counts else ""
            raise ValueError(f"a GeoTIFF with COMPRESS={method} holds {held}{' / '.join(dtypes)} "
                             f"data, not {count} band(s) of {dtype}: choose bands with -b / --bands "
                             f"or another --co COMPRESS (the default is lossless)")
    held = DRIVER_DTYPES.get(str(spec.driver))
    if dtype is not None and held is not None and str(dtype) not in held:
        raise ValueError(f"{spec.driver} holds {' / '.join(held)} data, not {dtype}: write a GeoTIFF "
                         f"(.tif) or PNG (.png)")
    allowed = BAND_COUNTS.get(str(spec.driver))
    if allowed is None or count in allowed:
        return
    counts = ", ".join(map(str, allowed[:-1])) + f" or {allowed[-1]}"
    fewer = [k for k in allowed if k <= count]
    k = 3 if 3 in fewer else max(fewer, default=0)
    example = " ".join(map(str, range(1, k + 1)))
    pick = f"choose bands with -b / --bands (e.g. -b {example}) or " if k else ""
    raise ValueError(f"{spec.driver} holds {counts} bands, not {count}: {pick}write a GeoTIFF (.tif)")


class _GdalWarnings(logging.Handler):
    """Collects the warnings GDAL raises through rasterio's logger while it is attached."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(re.sub(r"^CPLE_\w+ in ", "", record.getMessage()).strip())


def check_creation_options(spec: OutputSpec, count: int, dtype: np.dtype) -> None:
    """Refuse, before any decoding, creation options the output's GDAL driver does not know or
    a value it does not accept (GDAL only warns, ignores them and writes its default).

    A trial copy of a small image of the same band count and data type into memory, with the
    driver and options the output will use, collects GDAL's complaints about them.

    Args:
        spec: the resolved output spec.
        count: the bands written.
        dtype: the data type written.

    Raises:
        ValueError: naming the option (``--co NAME=VALUE``) and GDAL's reason.
    """
    opts = dict(spec.creation_options)
    if not opts:
        return
    driver = "COG" if spec.driver == "GTiff" and spec.cog else str(spec.driver)
    src, dst = f"/vsimem/co-check-{id(spec)}.tif", f"/vsimem/co-check-{id(spec)}.out"
    handler = _GdalWarnings()
    log = logging.getLogger("rasterio._env")
    log.addHandler(handler)
    failure = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(src, "w", driver="GTiff", width=64, height=64, count=count,
                               dtype=np.dtype(dtype).name) as ds:
                ds.write(np.zeros((count, 64, 64), dtype))
            try:
                rasterio.shutil.copy(src, dst, driver=driver, **opts)
            except Exception as e:  # noqa: BLE001 -- only refused below when it is about an option
                failure = str(e)
    finally:
        log.removeHandler(handler)
        for f in (src, dst):
            with contextlib.suppress(Exception):
                rasterio.shutil.delete(f)
    said = [m for m in handler.messages if "creation option" in m or "not recognised" in m]
    if failure and any(k in failure.upper() for k in opts):
        said.append(failure)
    if said:
        given = " ".join(f"--co {k}={v}" for k, v in opts.items())
        raise ValueError(f"{given}: GDAL's {driver} driver refuses it: {said[0]} (see "
                         f"https://gdal.org/drivers/raster/{driver.lower()}.html for its options)")


def _yes(value: str | None) -> bool:
    return str(value).upper() in ("YES", "TRUE", "ON", "1")


def lossy_reason(spec: OutputSpec, dtype: np.dtype) -> str | None:
    """What in ``spec`` would change the decoded pixel values, or None when it keeps them exactly.

    Args:
        spec: the resolved output spec.
        dtype: the data type written (NBITS below its width drops bits).

    Returns:
        A short description (for the refusal or the warning), or None.
    """
    opts = spec.creation_options
    driver = spec.driver
    if driver == "JPEG":
        return "JPEG is lossy"
    if driver == "WEBP" and not _yes(opts.get("LOSSLESS")):
        return "WebP is lossy unless --co LOSSLESS=TRUE"
    if driver == "JP2OpenJPEG":
        jp2 = {**LOSSLESS_JP2, **opts}
        if not _yes(jp2["REVERSIBLE"]) or jp2["QUALITY"] != "100":
            return "JPEG 2000 with REVERSIBLE=NO or QUALITY under 100 is lossy"
    if driver in ("GTiff", "COG"):
        method = opts.get("COMPRESS", "").upper()
        if method in LOSSY_TIFF:
            flag = LOSSY_TIFF[method]
            if flag is None or not _yes(opts.get(flag[0], flag[1])):
                return f"COMPRESS={method} is lossy" + (f" unless --co {flag[0]}=TRUE" if flag else "")
        if method.startswith("LERC") and float(opts.get("MAX_Z_ERROR", 0) or 0) > 0:
            return f"COMPRESS={method} with MAX_Z_ERROR > 0 is lossy"
        bits = opts.get("NBITS")
        if bits is not None and (not bits.isdigit() or int(bits) < 8 * dtype.itemsize):
            return f"NBITS={bits} drops bits of {dtype.name} pixels"
    return None


def check_exact(spec: OutputSpec, dtype: np.dtype, nodata: float | None, needs_mask: bool,
                colorinterp: Sequence[str] = ()) -> None:
    """Refuse, before any decoding, an output that would not keep the decoded values and the
    validity exactly; a lossy one asked for with ``allow_lossy`` gets a warning instead.

    Args:
        spec: the resolved output spec.
        dtype: the data type written.
        nodata: the scene's nodata value (None: none).
        needs_mask: validity is written as a mask.
        colorinterp: the written bands' colour interpretation (an alpha band may be alpha).

    Raises:
        ValueError: the format would store a data band as alpha (PNG 2 / 4 bands, WebP 4: the
            band would read as transparency); or it is lossy and not allowed, or lossy with a
            nodata value (changed values would turn nodata pixels valid and valid ones nodata).
    """
    count = len(colorinterp) if colorinterp else 0
    if count in ALPHA_COUNTS.get(str(spec.driver), ()) and str(colorinterp[-1]).lower() != "alpha":
        keep = " ".join(map(str, range(1, count)))
        raise ValueError(f"{spec.driver} would store band {count} as alpha (transparency), and it "
                         f"is a data band: choose other bands (e.g. -b {keep}) or write a "
                         f"GeoTIFF (.tif)")
    reason = lossy_reason(spec, dtype)
    if reason is None:
        return
    if nodata is not None:
        raise ValueError(f"{reason}: it would change values around the scene's nodata = "
                         f"{nodata:g}, so nodata pixels would read as valid (and valid ones as "
                         f"nodata); write a lossless output (the default .tif)")
    if not spec.allow_lossy:
        raise ValueError(f"{reason}: the output would not hold the decoded pixels (a second "
                         f"generation of loss); write a lossless output (the default .tif, .png) "
                         f"or accept the loss with --lossy")
    warnings.warn(f"{reason}: the output's pixel values differ from the decoded ones "
                  f"(--lossy)", stacklevel=4)


def target_dtype(spec: OutputSpec, source: str, nodata: float | None) -> np.dtype:
    """The output data type.

    Args:
        spec: the output spec (``dtype`` None keeps the source's).
        source: the store's data type.
        nodata: the scene's nodata value (None: none).

    Returns:
        The data type written.

    Raises:
        ValueError: the nodata value does not fit in it (nodata pixels would read as valid).
    """
    dt = np.dtype(spec.dtype or source)
    if nodata is not None and not _fits(np.array([nodata], dtype=np.float64), dt).all():
        raise ValueError(f"nodata {nodata:g} does not fit in {dt.name}: choose another --dtype")
    return dt


def _fits(a: np.ndarray, dt: np.dtype) -> np.ndarray:
    if dt.kind == "f":
        return np.isfinite(a) | ~np.isfinite(a)  # every value is representable (maybe rounded)
    info = np.iinfo(dt)
    return (a >= info.min) & (a <= info.max)


def cast_pixels(pixels: np.ndarray, dt: np.dtype, valid: np.ndarray | None = None
                ) -> tuple[np.ndarray, int]:
    """``pixels`` as ``dt``, values outside its range clipped, like ``gdal_translate -ot``.

    Args:
        pixels: decoded pixels, C x H x W.
        dt: the output data type.
        valid: the validity mask (H x W); only valid pixels count as clipped.

    Returns:
        The cast array and how many valid pixel values were clipped.
    """
    if pixels.dtype == dt:
        return pixels, 0
    if dt.kind == "f":
        return pixels.astype(dt), 0
    info = np.iinfo(dt)
    over = (pixels < info.min) | (pixels > info.max)
    if valid is not None:
        over &= valid[None]
    out = np.clip(pixels, info.min, info.max)
    if pixels.dtype.kind == "f":
        out = np.rint(out)
    return out.astype(dt), int(over.sum())


def warn_clipped(clipped: int, dt: np.dtype) -> None:
    """Say how many valid pixel values a narrower ``--dtype`` clipped (never silently).

    Args:
        clipped: the count (:func:`cast_pixels`); nothing is said for 0.
        dt: the output data type.
    """
    if clipped:
        warnings.warn(f"{clipped} valid pixel values lay outside the {dt.name} range and were "
                      f"clipped to it (choose a wider --dtype to keep them)", stacklevel=4)


# metadata domains GDAL writes itself into a GeoTIFF (not the source's)
GDAL_DOMAINS = ("IMAGE_STRUCTURE", "DERIVED_SUBDATASETS")


def metadata_domains(tif: Path) -> list[str]:
    """The metadata domains other than the default that hold tags in a raster, as warnings name
    them: the dataset's (``IMAGERY``) and each band's (``MYBAND (band 2)``).

    Args:
        tif: the raster.

    Returns:
        Their names, dataset domains first.
    """
    with rasterio.open(tif) as ds:
        names = [ns for ns in ds.tag_namespaces() or ()
                 if ns not in GDAL_DOMAINS and ds.tags(ns=ns)]
        for b in range(1, ds.count + 1):
            names += [f"{ns} (band {b})" for ns in ds.tag_namespaces(b) or ()
                      if ns not in GDAL_DOMAINS and ds.tags(b, ns=ns)]
    return names


def copy_domains(tif: Path) -> dict[str, str]:
    """GDAL options that copy ``tif``'s tags in other metadata domains (the dataset's and each
    band's) into a GeoTIFF / COG copy.

    GDAL 3.10's COPY_SRC_MDD copies the other domains but drops the bands' default-domain tags
    (WAVELENGTH ...); a raster that has both keeps its band tags, with a warning naming the
    domains left out and the way to keep everything (a plain GeoTIFF is moved, not copied).

    Args:
        tif: the decoded GeoTIFF.

    Returns:
        ``{"COPY_SRC_MDD": "YES"}`` where that loses nothing, else ``{}``.
    """
    domains = metadata_domains(tif)
    if not domains:
        return {}
    with rasterio.open(tif) as ds:
        band_tags = any(ds.tags(b) for b in range(1, ds.count + 1))
    if not band_tags:
        return {"COPY_SRC_MDD": "YES"}
    warnings.warn(f"the source's metadata domains {', '.join(domains)} cannot be copied into a "
                  f"COG / re-encoded GeoTIFF beside band-level tags (GDAL): write with --no-cog "
                  f"and no --co to keep both", stacklevel=5)
    return {}


def warn_lost_domains(before: list[str], target: Path, driver: str) -> None:
    """Say which of the decoded raster's metadata domains a copy in another format left out
    (PNG, JPEG, JPEG 2000, HFA ... keep neither the dataset's nor the bands' other domains).

    Args:
        before: :func:`metadata_domains` of the decoded GeoTIFF.
        target: the copy.
        driver: its GDAL driver, for the message.
    """
    if not before:
        return
    try:
        kept = set(metadata_domains(target))
    except (rasterio.errors.RasterioError, IndexError, ValueError):  # unreadable: say all
        kept = set()
    lost = [d for d in before if d not in kept]
    if lost:
        warnings.warn(f"the source's metadata domains {', '.join(lost)} cannot be kept in a "
                      f"{driver} file and were left out: write a GeoTIFF (--no-cog) to keep "
                      f"them", stacklevel=5)


def publish(tmp_tif: Path, out: Path, spec: OutputSpec) -> None:
    """Copy the decoded GeoTIFF into ``spec``'s format as ``out``, with its sidecars, atomically:
    everything is written into a hidden folder beside ``out`` and moved into place last.

    Args:
        tmp_tif: the decoded tiled GeoTIFF.
        out: the final path.
        spec: the resolved output spec (driver, COG, overviews, creation options).

    Raises:
        RuntimeError: the driver wrote no output file.
        DiskFullError: the disk filled while copying (nothing is published).
        rasterio.errors.RasterioError: GDAL refused the copy.
    """
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        target = staging / out.name
        opts = dict(spec.creation_options)
        if spec.overviews != "auto" and spec.overviews != "none":
            with rasterio.open(tmp_tif, "r+") as ds:
                ds.build_overviews([int(f) for f in spec.overviews], Resampling[spec.resampling])
        if spec.driver == "GTiff" and spec.cog:
            cog = {"COMPRESS": "DEFLATE", "PREDICTOR": "YES", "BLOCKSIZE": "256", **copy_domains(tmp_tif),
                   "BIGTIFF": "IF_SAFER", "OVERVIEW_RESAMPLING": spec.resampling.upper(),
                   "OVERVIEWS": {"auto": "AUTO", "none": "NONE"}.get(
                       spec.overviews if isinstance(spec.overviews, str) else "",
                       "FORCE_USE_EXISTING"), **opts}
            rasterio.shutil.copy(tmp_tif, target, driver="COG", **cog)
        elif spec.driver == "GTiff":
            if not opts and spec.overviews in ("auto", "none"):
                shutil.move(str(tmp_tif), target)
            else:
                rasterio.shutil.copy(tmp_tif, target, driver="GTiff", COPY_SRC_OVERVIEWS="YES",
                                     **copy_domains(tmp_tif),
                                     **{"TILED": "YES", "BLOCKXSIZE": "256", "BLOCKYSIZE": "256",
                                        "BIGTIFF": "IF_SAFER", **opts})
        else:
            driver_supported(spec.driver)
            if spec.driver == "JP2OpenJPEG":  # GDAL's default is lossy
                opts = {**LOSSLESS_JP2, **opts}
            domains = metadata_domains(tmp_tif)
            rasterio.shutil.copy(tmp_tif, target, driver=spec.driver, **opts)
            warn_lost_domains(domains, target, spec.driver)
        main = None
        for f in sorted(staging.iterdir()):
            if f.name == out.name:
                main = f
                continue
            f.replace(out.parent / f.name)  # sidecars first: the main file's arrival means done
        if main is None:
            raise RuntimeError(f"GDAL's {spec.driver} driver wrote no {out.name}")
        main.replace(out)
    except Exception as e:
        from .failures import DiskFullError, NO_SPACE, disk_full

        if disk_full(e, staging):  # before the staging copy goes and frees the space it took
            raise DiskFullError(f"{out}: {NO_SPACE} while writing the output; nothing was "
                                f"published as {out.name}; free some space and rerun") from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def parse_overviews(values: Sequence[str] | None) -> str | tuple[int, ...]:
    """CLI ``--overviews auto | none | 2 4 8``.

    Args:
        values: the option's words, or None.

    Returns:
        "auto", "none", or the factors.

    Raises:
        ValueError: words that are neither keywords nor whole numbers.
    """
    if not values:
        return "auto"
    if len(values) == 1 and values[0].lower() in ("auto", "none"):
        return values[0].lower()
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--overviews {' '.join(values)}: 'auto', 'none' or factors such as 2 4 8") from None


def describe(spec: OutputSpec) -> dict[str, Any]:
    """The spec as plain data (for a report or a log).

    Args:
        spec: the output spec.

    Returns:
        Its fields by name.
    """
    return {"driver": spec.driver, "cog": spec.cog, "dtype": spec.dtype, "bands": spec.bands,
            "overviews": spec.overviews, "resampling": spec.resampling,
            "creation_options": spec.creation_options, "allow_lossy": spec.allow_lossy}
