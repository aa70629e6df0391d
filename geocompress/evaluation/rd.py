"""Rate-distortion measurement of classical and learned codecs, per image, resumable.

One record per (codec, setting, image): bytes, ``bpp`` (every byte of the file / string over
H x W), ``psnr`` (fixed peak: ``2**bits - 1``), ``psnr_paper`` (eq. 10: per-band peak = that
band's maximum, averaged over bands), ``ms_ssim`` and ``ms_ssim_db`` (eq. 11; NaN for images of
160 px or less, below MS-SSIM's five scales), encode / decode seconds. Records are appended as
JSON lines to a cache file as soon as they exist, so an interrupted run resumes where it stopped;
a learned codec's records carry its weights digest and are redone when the checkpoint changes.

Averages are taken per (codec, setting) over the images, as CompressAI does: the RD curve of a
codec is its mean bpp against its mean quality at each setting. PSNR is the mean of the images'
PSNRs; MS-SSIM in dB is eq. (11) of the *mean* MS-SSIM (CompressAI's plots convert the averaged
value), not the mean of per-image dB values, which the best-coded tiles would dominate.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geocompress.metrics import to_db

from . import classical as C
from .bd import bd_psnr, bd_rate, interp_psnr_at_rate, rd_front
from .images import EvalImage, ImageSet

METRICS = ("psnr_paper", "psnr", "ms_ssim_db")
METRIC_LABELS = {"psnr_paper": "PSNR (eq. 10, per-band peak) [dB]",
                 "psnr": "PSNR (fixed peak) [dB]", "ms_ssim_db": "MS-SSIM [dB] (eq. 11)",
                 "ms_ssim": "MS-SSIM"}

# Sweeps spanning ~0.1 .. 2 bpp on 256 x 256 RGB aerial tiles (measured on UC Merced test tiles),
# the range of the paper's RD figures; the codecs' own default grids reach far higher rates.
EVAL_GRIDS: dict[str, tuple[float, ...]] = {
    "jpeg2000": (0.1, 0.15, 0.25, 0.4, 0.6, 0.8, 1.2, 1.6, 2.0),
    "webp": (0, 5, 15, 30, 50, 65, 75, 82),
    "avif": (5, 15, 25, 35, 45, 52, 58, 64),
    "jpegxl": (0, 10, 20, 35, 50, 65, 75, 85),
    "bpg-hevc": (48, 45, 42, 39, 36, 33, 30, 27, 24),
}

CLASSICAL_LABELS = {"jpeg2000": "JPEG 2000 (OpenJPEG)", "webp": "WebP (libwebp)",
                    "avif": "AVIF (libaom)", "jpegxl": "JPEG XL (libjxl)",
                    "bpg-hevc": "BPG-like: HEVC intra (x265, HEIF)"}
LEARNED_LABELS = {"mgssnet": "MGSSNet", "mbt2018": "Minnen et al. (joint)",
                  "mbt2018-mean": "Minnen et al. (mean)", "bmshj2018-hyperprior": "Ballé et al. (hyperprior)",
                  "bmshj2018-factorized": "Ballé et al. (factorized-ReLU)",
                  "cheng2020-attn": "Cheng et al. (attn)"}

__all__ = [
    "EVAL_GRIDS",
    "METRICS",
    "ClassicalSpec",
    "LearnedSpec",
    "RDCache",
    "average",
    "curve",
    "discover_runs",
    "measure",
    "run_classical",
    "run_learned",
]


# ------------------------------------------------------------------------------------------ specs

@dataclass(frozen=True)
class ClassicalSpec:
    """A classical codec and its sweep, as a report measures it.

    Attributes:
        codec: a registry name of :mod:`.classical`.
        grid: its quality parameters (None: :data:`EVAL_GRIDS`, else the codec's default grid).
    """

    codec: str
    grid: tuple[float, ...] | None = None

    @property
    def name(self) -> str:
        """The codec's name in records and tables (the registry name), as :attr:`LearnedSpec.name`.

        Returns:
            ``codec``.
        """
        return self.codec

    @property
    def label(self) -> str:
        """The codec's label on tables and figures (backend included, e.g. "WebP (libwebp)").

        Returns:
            The label, or the registry name when none is defined.
        """
        return CLASSICAL_LABELS.get(self.codec, self.codec)

    def settings(self) -> tuple[float, ...]:
        """The sweep's quality parameters.

        Returns:
            ``grid``, else the codec's :data:`EVAL_GRIDS` entry (~0.1 - 2 bpp on aerial tiles), else
            its own default grid.

        Raises:
            KeyError: an unknown codec without a grid.
        """
        if self.grid is not None:
            return tuple(self.grid)
        return EVAL_GRIDS.get(self.codec, C.get_codec(self.codec).default_grid)


@dataclass
class LearnedSpec:
    """A learned codec: one checkpoint per quality, shipped weights, or the untrained architecture.

    Attributes:
        name: the codec's name in records, tables and caches.
        arch: the registry architecture (None: ``name``).
        checkpoints: quality -> checkpoint path (a path that does not exist is reported as
            missing, not skipped silently).
        shipped: use the package's shipped qualities of ``arch``.
        untrained: the fixed-seed architecture built from ``config`` (pipeline tests only).
        config: architecture options for ``untrained``.
        label: the label on tables and figures (None: :data:`LEARNED_LABELS` or ``name``).
        groups: the report's figures it appears on: "main" (the paper's comparison), "ablation",
            "generalization".
        precision: the codec's transform precision.
        batch_size: tiles per encode / decode call.
        expected: where checkpoints were looked for (for the report's *Missing*).
    """

    name: str
    arch: str | None = None
    checkpoints: dict[int, str] = field(default_factory=dict)
    shipped: bool = False
    untrained: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    label: str | None = None
    groups: tuple[str, ...] = ("main",)
    precision: str = "float64"
    batch_size: int = 8
    expected: str | None = None  # where checkpoints were looked for (for the report's "Missing")
    _loaded: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def display(self) -> str:
        """The codec's label on tables and figures.

        Returns:
            ``label``, else the paper's name of ``name``, else ``name``.
        """
        return self.label or LEARNED_LABELS.get(self.name, self.name)

    def available(self) -> tuple[dict[int, str | None], list[str]]:
        """The qualities that can be measured, and why others cannot.

        Returns:
            ``(quality -> checkpoint, or None for shipped / untrained weights, reasons for what is
            missing)``; untrained codecs have the one quality 0.
        """
        found: dict[int, str | None] = {}
        missing: list[str] = []
        if self.untrained:
            return {0: None}, []
        if self.shipped:
            from geocompress.codec.weights import shipped_index

            idx = shipped_index().get(self.arch or self.name)
            if not idx:
                missing.append(f"{self.name}: no shipped weights for {self.arch or self.name}")
            else:
                for q in sorted(int(k) for k in idx["qualities"]):
                    found[q] = None
        for q, p in sorted(self.checkpoints.items()):
            if Path(p).is_file():
                found[int(q)] = str(p)
            else:
                missing.append(f"{self.name} q{q}: {p}")
        if not found and not missing:
            missing.append(f"{self.name}: no checkpoint" + (f" (looked for {self.expected})"
                                                            if self.expected else " given"))
        return found, missing

    def source_id(self, quality: int, checkpoint: str | None) -> str:
        """Identity of the weights behind a quality, cheap to compute (no model load).

        Cached records are reused only while it is unchanged, so a retrained checkpoint is measured
        again instead of being served stale numbers.

        Args:
            quality: the quality.
            checkpoint: its checkpoint path, or None for shipped / untrained weights.

        Returns:
            ``untrained:<arch>:<config>``, ``shipped:<digest>`` or ``file:<path>:<size>:<mtime>``.
        """
        if self.untrained:
            return f"untrained:{self.arch or self.name}:{json.dumps(self.config, sort_keys=True)}"
        if checkpoint is None:
            from geocompress.codec.weights import shipped_path

            return f"shipped:{shipped_path(self.arch or self.name, quality)[2]}"
        st = Path(checkpoint).stat()
        return f"file:{Path(checkpoint).resolve()}:{st.st_size}:{st.st_mtime_ns}"

    def load(self, quality: int, checkpoint: str | None, device: str = "cpu"):
        """The :class:`~geocompress.codec.TileCodec` of one quality, memoised.

        The report needs a codec for RD, the visual comparison and classification; loading it once
        saves minutes, and keeping only the last one keeps memory flat.

        Args:
            quality: the quality.
            checkpoint: its checkpoint path, or None for shipped / untrained weights.
            device: torch device.

        Returns:
            The codec.

        Raises:
            ValueError: an unknown architecture.
            geocompress.codec.WeightsError: a missing or damaged checkpoint.
        """
        from geocompress.codec import load_codec

        key = (quality, checkpoint, device)
        if key in self._loaded:
            return self._loaded[key]
        common = {"device": device, "precision": self.precision, "batch_size": self.batch_size}
        if self.untrained:
            codec = load_codec(self.arch or self.name, pretrained=False, **common, **self.config)
        elif checkpoint is None:
            codec = load_codec(self.arch or self.name, quality=quality, pretrained=True, **common)
        else:
            codec = load_codec(self.arch or self.name, quality=quality, checkpoint=checkpoint, **common)
        self._loaded.clear()  # keep one model in memory at a time
        self._loaded[key] = codec
        return codec


def discover_runs(runs: str | os.PathLike, names: Iterable[str] | None = None,
                  export: str = "model.pt") -> dict[str, dict[int, str]]:
    """Checkpoints laid out as the trainer writes them: ``runs/<name>/q<quality>/model.pt``.

    Args:
        runs: the runs folder (absent: nothing found).
        names: the codecs to look for (None: every sub-folder). Every name is in the result,
            with an empty dict when none was found, so a missing codec shows up in the report
            instead of silently disappearing.
        export: the checkpoint's file name in each quality folder.

    Returns:
        ``name -> {quality: checkpoint path}``.
    """
    runs = Path(runs)
    out: dict[str, dict[int, str]] = {n: {} for n in (names or [])}
    if runs.is_dir():
        for d in sorted(runs.iterdir()):
            if not d.is_dir() or (names is not None and d.name not in out):
                continue
            for q in sorted(d.glob("q*")):
                if q.name[1:].isdigit() and (q / export).is_file():
                    out.setdefault(d.name, {})[int(q.name[1:])] = str(q / export)
    return out


# ------------------------------------------------------------------------------------------ cache

class RDCache:
    """JSON-lines store of records keyed by (codec, setting, image); appends survive a kill.

    Every record is appended as soon as it exists, so an interrupted report resumes where it
    stopped; a line cut by a kill is ended (so later appends stay whole) and its record redone.

    Args:
        path: the ``.jsonl`` file (created on the first :meth:`add`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records: dict[tuple[str, str, str], dict[str, Any]] = {}
        if self.path.exists():
            with open(self.path, "rb+") as fb:  # a line cut by a kill: end it, so appends stay whole
                fb.seek(0, os.SEEK_END)
                if fb.tell():
                    fb.seek(-1, os.SEEK_END)
                    if fb.read(1) != b"\n":
                        fb.write(b"\n")
            with open(self.path) as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a kill: redo that record
                        continue
                    self.records[self.key(r)] = r

    @staticmethod
    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        """The key of a record: one per (codec, setting, image), settings compared as text.

        Args:
            r: a record with ``codec``, ``setting`` and ``image``.

        Returns:
            ``(codec, setting, image)`` as strings.
        """
        return str(r["codec"]), str(r["setting"]), str(r["image"])

    def get(self, codec: str, setting: Any, image: str, digest: str | None = None) -> dict | None:
        """The cached record, if any and if it was made by the same weights.

        Args:
            codec: the codec's name.
            setting: its setting (compared as text).
            image: the image's name.
            digest: the weights' identity (:meth:`LearnedSpec.source_id`); a record made by other
                weights counts as absent (None: any).

        Returns:
            The record, or None.
        """
        r = self.records.get((codec, str(setting), image))
        if r is not None and digest is not None and r.get("digest") != digest:
            return None
        return r

    def add(self, r: dict[str, Any]) -> None:
        """Append a record to the file and to the cache (it replaces any record of the same key).

        Args:
            r: a JSON-serialisable record (numpy scalars allowed).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(r, default=_json_default) + "\n")
        self.records[self.key(r)] = r

    def select(self, codec: str | None = None) -> list[dict[str, Any]]:
        """The cached records, of one codec or all.

        Args:
            codec: the codec's name (None: every codec).

        Returns:
            The records, in insertion order.
        """
        return [r for r in self.records.values() if codec is None or r["codec"] == codec]


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o))


# ---------------------------------------------------------------------------------------- metrics

@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block (restored after).

    MS-SSIM's small convolutions gain nothing from more threads, and on a shared machine a second
    thread that has to wait makes them several times slower (measured:
    ``catalogs/evaluations/classical-ucmerced.md``, *Cost of measuring MS-SSIM*).

    Yields:
        None.
    """
    import torch

    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def measure(orig: np.ndarray, recon: np.ndarray, nbytes: int, peak: float) -> dict[str, float]:
    """Rate and distortion of one reconstruction (see the module docstring for each measure).

    Args:
        orig: the original, C x H x W.
        recon: the reconstruction, reshaped to ``orig``'s shape.
        nbytes: the coded size: the whole file or string.
        peak: the fixed PSNR peak (the image's ``2**bits - 1``).

    Returns:
        ``bytes``, ``bpp``, ``psnr``, ``psnr_paper``, ``ms_ssim``, ``ms_ssim_db`` (NaN for images
        of 160 px or less, below MS-SSIM's five scales).

    Raises:
        ValueError: ``recon`` does not hold ``orig``'s number of samples.
    """
    from geocompress import metrics as M

    orig = np.asarray(orig)
    recon = np.asarray(recon).reshape(orig.shape)
    _, h, w = orig.shape
    out = {"bytes": int(nbytes), "bpp": M.bpp(int(nbytes), h * w),
           "psnr": M.psnr(orig, recon, peak=peak), "psnr_paper": M.psnr_paper(orig, recon)}
    if min(h, w) > 160:
        with one_thread():
            v = M.ms_ssim(orig, recon, peak=peak)
        out["ms_ssim"], out["ms_ssim_db"] = v, M.to_db(v)
    else:
        out["ms_ssim"] = out["ms_ssim_db"] = float("nan")
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _classical_input(im: EvalImage) -> np.ndarray:
    a = im.hwc
    return a if a.shape[2] in (1, 3) else np.ascontiguousarray(a[:, :, :3])


def classical_roundtrip(codec: str, im: EvalImage, param: float) -> tuple[dict[str, Any], np.ndarray]:
    """Encode and decode one image at one parameter, timed.

    Args:
        codec: a registry name.
        im: the image (bands beyond 3 are dropped: classical codecs take 1 or 3).
        param: the codec's quality parameter.

    Returns:
        ``(record of measure() plus enc_s / dec_s, C x H x W reconstruction)``.

    Raises:
        UnsupportedInput: input the codec cannot take.
        ValueError: ``param`` outside the codec's range.
    """
    a = _classical_input(im)
    t0 = time.perf_counter()
    data = C.encode(codec, a, param)
    t1 = time.perf_counter()
    dec = C.decode(codec, data, bands=a.shape[2])
    t2 = time.perf_counter()
    recon = np.moveaxis(dec.reshape(a.shape), -1, 0)
    orig = np.moveaxis(a, -1, 0)
    rec = {**measure(orig, recon, len(data), im.peak), "enc_s": t1 - t0, "dec_s": t2 - t1}
    return rec, recon


def run_classical(spec: ClassicalSpec, images: ImageSet, cache: RDCache, progress: bool = True
                  ) -> list[dict[str, Any]]:
    """Sweep ``spec`` over ``images``; cached records are reused, new ones appended to the cache.

    Args:
        spec: the codec and its sweep.
        images: the image set.
        cache: the report's RD cache.
        progress: show a progress bar.

    Returns:
        One record per (setting, image); input the codec cannot take gives a record with
        ``error`` instead of numbers, so the report can count it.
    """
    settings = spec.settings()
    out = []
    with _progress(len(settings) * len(images), spec.codec, progress) as bar:
        for im in images:
            for p in settings:
                r = cache.get(spec.codec, p, im.name)
                if r is None:
                    r = {"codec": spec.codec, "kind": "classical", "setting": p, "image": im.name,
                         "label": im.label}
                    try:
                        r.update(classical_roundtrip(spec.codec, im, p)[0])
                    except C.UnsupportedInput as e:
                        r["error"] = str(e)
                    cache.add(r)
                out.append(r)
                bar.update(1)
    return out


def run_learned(spec: LearnedSpec, images: ImageSet, cache: RDCache, progress: bool = True,
                device: str = "cpu") -> tuple[list[dict[str, Any]], list[str]]:
    """Encode and decode ``images`` at every available quality of ``spec``, timed per tile.

    Args:
        spec: the learned codec.
        images: the image set.
        cache: the report's RD cache (records of other weights are redone).
        progress: show a progress bar.
        device: torch device.

    Returns:
        ``(records, what was missing)``: checkpoints that do not exist are reported, not raised.

    Raises:
        ValueError: an unknown architecture.
        geocompress.codec.WeightsError: a damaged checkpoint.
    """
    found, missing = spec.available()
    out: list[dict[str, Any]] = []
    for q, ckpt in found.items():
        sid = spec.source_id(q, ckpt)
        todo = [im for im in images if cache.get(spec.name, q, im.name, sid) is None]
        out += [cache.get(spec.name, q, im.name) for im in images if im not in todo]
        if not todo:
            continue
        codec = spec.load(q, ckpt, device=device)
        with _progress(len(images), f"{spec.name} q{q}", progress) as bar:
            bar.update(len(images) - len(todo))
            step = max(1, spec.batch_size)
            for i in range(0, len(todo), step):
                chunk = todo[i:i + step]
                for bits in sorted({im.bits for im in chunk}, key=lambda b: -1 if b is None else b):
                    part = [im for im in chunk if im.bits == bits]
                    t0 = time.perf_counter()
                    strings = codec.encode([im.pixels for im in part], bits=bits)
                    t1 = time.perf_counter()
                    recons = codec.decode(strings)
                    t2 = time.perf_counter()
                    for im, s, x in zip(part, strings, recons):
                        r = {"codec": spec.name, "kind": "learned", "setting": q, "image": im.name,
                             "label": im.label, "arch": codec.arch, "digest": sid,
                             "weights": codec.digest, "checkpoint": ckpt,
                             **measure(im.pixels, x, len(s), im.peak),
                             "enc_s": (t1 - t0) / len(part), "dec_s": (t2 - t1) / len(part)}
                        cache.add(r)
                        out.append(r)
                    bar.update(len(part))
    return out, missing


# -------------------------------------------------------------------------------------- averaging

def average(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean bpp and quality per (codec, setting): the codec's RD points, as CompressAI averages.

    Args:
        records: per-image records of any codecs.

    Returns:
        One row per (codec, setting), sorted by codec and bpp, with the number of images and of
        failed ones (left out of the means); ``ms_ssim_db`` is eq. 11 of the mean MS-SSIM.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["codec"], str(r["setting"])), []).append(r)
    rows = []
    for (codec, setting), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        row: dict[str, Any] = {"codec": codec, "kind": rs[0]["kind"], "setting": rs[0]["setting"],
                               "images": len(ok), "failed": len(rs) - len(ok)}
        for k in ("bpp", "psnr", "psnr_paper", "ms_ssim", "ms_ssim_db", "enc_s", "dec_s"):
            vals = np.array([r[k] for r in ok if k in r], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            row[k] = float(vals.mean()) if vals.size else float("nan")
        row["min_bytes"] = min((int(r["bytes"]) for r in ok if r.get("bytes")), default=0)
        if math.isfinite(row["ms_ssim"]):
            row["ms_ssim_db"] = to_db(row["ms_ssim"])
        rows.append(row)
    rows.sort(key=lambda r: (r["codec"], r["bpp"] if math.isfinite(r["bpp"]) else 0.0))
    return rows


def curve(rows: Sequence[dict[str, Any]], codec: str, metric: str, monotone: bool = True
          ) -> tuple[np.ndarray, np.ndarray]:
    """A codec's averaged RD curve, by rate.

    Args:
        rows: averaged rows (:func:`average`).
        codec: the codec's name.
        metric: the quality column.
        monotone: keep only points that raise both rate and quality over the previous kept one:
            Bjøntegaard's piecewise interpolation needs a strictly increasing curve, and a point
            that spends more bits for no gain is dominated.

    Returns:
        ``(bpp, quality)`` arrays, empty when the codec has no finite points.
    """
    pts = sorted((r["bpp"], r[metric]) for r in rows
                 if r["codec"] == codec and r["images"] and math.isfinite(r["bpp"])
                 and math.isfinite(r[metric]) and r["bpp"] > 0)
    if monotone and pts:
        pts = [pts[i] for i in rd_front(*zip(*pts))]
    if not pts:
        return np.zeros(0), np.zeros(0)
    b, q = zip(*pts)
    return np.asarray(b), np.asarray(q)


def rate_overlap(rates_a: np.ndarray, rates_b: np.ndarray) -> float:
    """Shared log-rate range of two curves over the shorter one's.

    A Bjøntegaard delta integrates over the shared range only, so a small overlap says little
    about the whole curves; reports print it beside every delta.

    Args:
        rates_a: one curve's rates.
        rates_b: the other's.

    Returns:
        In [0, 1] (1: one lies within the other; 0: disjoint); NaN when a curve has fewer than 2
        points or no rate span.
    """
    if len(rates_a) < 2 or len(rates_b) < 2:
        return float("nan")
    la, lb = np.log(rates_a), np.log(rates_b)
    shared = min(la.max(), lb.max()) - max(la.min(), lb.min())
    shorter = min(la.max() - la.min(), lb.max() - lb.min())
    return float(np.clip(shared / shorter, 0.0, 1.0)) if shorter > 0 else float("nan")


def bd_matrix(rows: Sequence[dict[str, Any]], tests: Sequence[str], anchors: Sequence[str],
              metric: str = "psnr_paper") -> list[dict[str, Any]]:
    """BD-rate (%) and BD-<metric> (dB) of every test codec against every anchor (pchip, the JVET
    method, through :mod:`.bd`), each on its :func:`curve` (RD front only).

    Args:
        rows: averaged rows (:func:`average`).
        tests: the codecs measured.
        anchors: the codecs they are measured against (a codec is not compared with itself).
        metric: the quality column.

    Returns:
        One row per (test, anchor): ``bd_rate_pct``, ``bd_quality_db`` (NaN where a curve has
        fewer than 2 points or the curves do not overlap), the point counts and ``rate_overlap``.
    """
    out = []
    for t in tests:
        rt, qt = curve(rows, t, metric)
        for a in anchors:
            if a == t:
                continue
            ra, qa = curve(rows, a, metric)
            br = bq = float("nan")
            if len(rt) >= 2 and len(ra) >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    br, bq = bd_rate(ra, qa, rt, qt), bd_psnr(ra, qa, rt, qt)
            out.append({"test": t, "anchor": a, "metric": metric, "bd_rate_pct": br,
                        "bd_quality_db": bq, "test_points": len(rt), "anchor_points": len(ra),
                        "rate_overlap": rate_overlap(rt, ra)})
    return out


def quality_at(rows: Sequence[dict[str, Any]], codec: str, metric: str, rates: Sequence[float]
               ) -> list[float]:
    """A codec's quality at given rates (log-rate pchip on its RD front).

    Args:
        rows: averaged rows (:func:`average`).
        codec: the codec's name.
        metric: the quality column.
        rates: the rates (bpp).

    Returns:
        One value per rate; NaN outside the codec's measured range or when it has fewer than 2
        points.
    """
    b, q = curve(rows, codec, metric)
    if len(b) < 2:
        return [float("nan")] * len(rates)
    return [float(v) for v in np.atleast_1d(interp_psnr_at_rate(b, q, list(rates)))]


def nearest_setting(records: Sequence[dict[str, Any]], codec: str, target_bpp: float,
                    image: str | None = None) -> Any | None:
    """The setting of ``codec`` whose bpp is closest to the target: how a learned codec, which has a
    few fixed qualities, is compared near a rate.

    Args:
        records: per-image records.
        codec: the codec's name.
        target_bpp: the rate aimed at.
        image: that image's own bpp (None: the bpp averaged over ``records``).

    Returns:
        The setting, or None when the codec has no usable records.
    """
    rs = [r for r in records if r["codec"] == codec and "error" not in r
          and (image is None or r["image"] == image)]
    if not rs:
        return None
    if image is not None:
        return min(rs, key=lambda r: abs(r["bpp"] - target_bpp))["setting"]
    rows = average(rs)
    return min(rows, key=lambda r: abs(r["bpp"] - target_bpp))["setting"]


def reconstruct_near(spec: ClassicalSpec | LearnedSpec, images: Sequence[EvalImage], target_bpp: float,
                     records: Sequence[dict[str, Any]], per_image: bool = False, device: str = "cpu"
                     ) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Reconstructions of ``images`` by ``spec`` near ``target_bpp``, with their records.

    Classical codecs hit the rate per image (:func:`classical.encode_at_bpp`: the largest file at
    or under the target; the cheapest setting when even that is over). Learned codecs have a few
    qualities: the one whose bpp is nearest the target, on each image (``per_image``) or on
    average over ``records`` (one quality for the whole set, as the paper's Fig. 15 does).

    Args:
        spec: the codec.
        images: the images.
        target_bpp: the rate aimed at.
        records: RD records that choose the learned codec's quality.
        per_image: choose the learned quality per image instead of once for all.
        device: torch device of a learned codec.

    Returns:
        ``(C x H x W reconstruction, record)`` per image, in order; empty for a learned codec
        without weights.

    Raises:
        UnsupportedInput: input a classical codec cannot take.
    """
    out: list[tuple[np.ndarray, dict[str, Any]]] = []
    if isinstance(spec, ClassicalSpec):
        c = C.get_codec(spec.codec)
        for im in images:
            a = _classical_input(im)
            try:
                _, _, param = C._encode_at_bpp(spec.codec, a, float(target_bpp))
            except ValueError:
                param = c.param_range[0] if c.increasing else c.param_range[1]
            rec, recon = classical_roundtrip(spec.codec, im, float(param))
            out.append((recon, {"codec": spec.codec, "setting": float(param), "image": im.name, **rec}))
        return out
    found, _ = spec.available()
    if not found:
        return out
    fixed = None if per_image else nearest_setting(records, spec.name, target_bpp)
    by_q: dict[Any, list[int]] = {}
    for i, im in enumerate(images):
        q = nearest_setting(records, spec.name, target_bpp, im.name) if per_image else fixed
        q = next(iter(found)) if q is None or int(q) not in found else int(q)
        by_q.setdefault(q, []).append(i)
    results: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
    for q, idx in by_q.items():
        codec = spec.load(q, found[q], device=device)
        for j in range(0, len(idx), max(1, spec.batch_size)):
            part = idx[j:j + max(1, spec.batch_size)]
            for bits in {images[i].bits for i in part}:
                sub = [i for i in part if images[i].bits == bits]
                strings = codec.encode([images[i].pixels for i in sub], bits=bits)
                for i, s, x in zip(sub, strings, codec.decode(strings)):
                    im = images[i]
                    results[i] = (x, {"codec": spec.name, "setting": q, "image": im.name,
                                      **measure(im.pixels, x, len(s), im.peak)})
    return [results[i] for i in range(len(images))]
