"""Batches of tiles (uint8 / uint16, C x H x W) to self-describing byte strings and back.

What the codec does around the model, and why:

* **Scaling**: pixels map to [0, 1] by ``2**bits - 1`` (8 for uint8; for uint16 the sensor's bit
  depth, e.g. 12, given by the caller, else the bit length of the tile's own maximum; the header
  records it), or, given ``ranges``, each band's ``lo .. hi`` to 0 .. 1 (format 5): the models
  are trained on 16-bit scenes stretched per band to their full contrast
  (:mod:`geocompress.training.radiometry`), and a scene pipeline passes each band's range of
  valid values over the whole scene, so that the model sees that contrast and neighbouring
  tiles share one mapping (halo coding needs it).
* **Bands**: the model codes 3-band images; a tile's bands are coded in groups of three
  ``[0,1,2], [3,4,5], ...``; a short last group repeats its last band (a 1-band tile is coded as
  grey RGB, a 4-band tile as RGB + NNN). The decoder keeps the first bands of each group.
* **Padding**: sizes that are not a multiple of the model's downsampling factor are padded by
  edge replication (cheap to code, unlike zeros) and cropped back.
* **Precision**: the entropy-parameter path always runs in exact fixed point (:mod:`.exact`), so
  bytes written in any precision decode correctly in any other, on any device. The transforms
  run in the mode of :mod:`.precision`: by default (``"auto"``) the fastest one the hardware has
  (bfloat16 on AMX / AVX512-BF16 CPUs and on GPUs). Only ``precision="float64"`` makes the pixels
  identical whatever the machine, batch size or thread count (and a tile encode to the same bytes
  alone or in a batch); the fast modes may differ by a level here and there.
* **Refinement** (``refine_steps > 0``, off by default): the encoder searches, per tile, for a
  latent that codes better under the weights' own rate-distortion objective (:mod:`.refine`).
  Decoding is untouched (same format, same bit-exactness); the encoder then runs in float32 and
  costs a forward and backward pass per step, and its bytes may differ between machines.
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import asdict
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .choice import CodecChoice
from .entropy import LatentCoder, NonCanonicalStream
from .errors import CodecError, CorruptStreamError, WeightsMismatchError
from .format import (FORMAT_VERSION, RANGE_VERSION, RATE_VERSION, SYMBOL_ORDER, TileHeader,
                     TileString, check_ranges, pack, quantize_rate, read_header, unpack)
from .precision import Transforms, resolve_precision, weight_dtype
from .refine import refine_latents
from .weights import load_checkpoint, load_shipped, state_digest, untrained

SUPPORTED_DTYPES = (np.dtype("uint8"), np.dtype("uint16"))
Sides = tuple[int, int, int, int]  # latent pixels of context present: top, bottom, left, right
MAX_DECODE_PIXELS = 4096 * 4096  # bounds what a header can make the decoder allocate
# Bounds on the work one tile string may ask for, checked before any decoding (a forged header
# with a valid CRC could otherwise declare hundreds of band groups and keep a decoder busy for
# minutes). The encoder refuses the same, so every string this codec writes decodes:
MAX_BAND_GROUPS = 32  # 96 bands: every multispectral sensor (Sentinel-2 13, WorldView-3 16)
MAX_DECODE_WORK = 2 * MAX_DECODE_PIXELS  # band groups x padded pixels: a 4096 px tile of 6 bands
# Bound on a decoded latent value: encoders of these weights write |y| < ~100 (a tile of the
# sample scene at the top variable-rate level: 87), and clamp to it, so every string written
# decodes; a latent beyond it (or not finite: truncated or forged streams decode to escape values
# that overflow the synthesis) is refused naming the tile, before it reaches a neighbour's halo.
LATENT_LIMIT = 4096.0
REFINE_LR = 5e-3
# Weights that wrote tile strings before format 3 (2026-12-02): the shipped MGSSNet q1-q4 bases
# (2026-12-01) wrote versions 1 and 2 first. Every other weights' strings are of the one version
# their codec writes (3, or 4 for a variable-rate model), so an older version in their header is
# an edit (a downgrade to version 1 would decode the symbols in another order: wrong pixels).
LEGACY_VERSIONS = (1, 2, FORMAT_VERSION)
LEGACY_WEIGHTS = frozenset({
    "c3a7bf910a6b09c5", "f117b3f5662c8b15", "1fae0c64bff23a39", "4b8a1ed4cace3ea9"})


def _as_tiles(tiles: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(tiles, np.ndarray):
        if tiles.ndim == 4:
            return list(tiles)
        if tiles.ndim in (2, 3):
            return [tiles]
        raise CodecError(f"expected tiles as B x C x H x W or C x H x W, got shape {tiles.shape}")
    return [np.asarray(t) for t in tiles]


class TileCodec:
    """A model plus everything needed to turn tiles into strings: see the module docstring."""

    def __init__(self, model: torch.nn.Module, quality: float = 0, device: str | torch.device = "cpu",
                 precision: str = "auto", batch_size: int = 16, refine_steps: int = 0,
                 refine_lr: float = REFINE_LR, refine_lambda: float | None = None) -> None:
        if refine_steps < 0:
            raise ValueError("refine_steps must be >= 0")
        model = model.eval()
        self.arch: str = getattr(model, "arch", type(model).__name__.lower())
        self.config: dict[str, Any] = dict(getattr(model, "config", {}))
        self.digest = state_digest(model.state_dict())
        # a variable-rate model codes at a continuous level (its quality scale), carried in each
        # tile's header; fixed-rate weights have one rate and an integer shipped-quality index
        self.variable_rate = hasattr(model, "set_rate")
        self.rate: float | None = None
        if self.variable_rate:
            self.rate = quantize_rate(model.check_level(quality))
            if refine_steps:
                raise CodecError("refinement is not available for variable-rate models yet")
            self.quality: float = self.rate
        else:
            if float(quality) != int(quality):
                raise CodecError(f"{self.arch} weights have one rate each (integer qualities); "
                                 f"quality {quality} needs a variable-rate model (mgssnet-vr)")
            self.quality = int(quality)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        self.dtype = weight_dtype(self.precision)
        self.batch_size = int(batch_size)
        self.model = model.to(device=self.device, dtype=self.dtype)
        self.transforms = Transforms(self.model, self.precision, self.device)
        self.coder = LatentCoder(self.model, self.transforms)
        self.factor = int(getattr(model, "downsampling_factor", 64))
        self.latent_stride = 16  # pixels per latent pixel (g_a's downsampling)
        self.group = int(self.config.get("in_channels", 3))
        self.refine_steps = int(refine_steps)
        self.refine_lr = float(refine_lr)
        self.lmbda: float | None = (refine_lambda if refine_lambda is not None
                                    else getattr(model, "meta", {}).get("lambda"))
        if self.refine_steps and self.lmbda is None:
            raise CodecError("refinement optimises the weights' own rate-distortion trade-off, and "
                             "these weights do not record the lambda they were trained with")
        self._refine_model: torch.nn.Module | None = None

    def set_level(self, level: float) -> None:
        """Code at ``level`` from now on (a variable-rate model's scale; rate control's knob).

        Args:
            level: the level, quantized to what a header carries.

        Raises:
            CodecError: the weights are fixed-rate.
            ValueError: a level outside the model's range.
        """
        if not self.variable_rate:
            raise CodecError(f"{self.arch} weights have one rate; levels need a variable-rate model")
        self.rate = quantize_rate(self.model.check_level(level))
        self.quality = self.rate

    def __repr__(self) -> str:
        q = self.rate if self.variable_rate else self.quality
        return (f"TileCodec(arch={self.arch!r}, quality={q}, digest={self.digest[:12]}, "
                f"device={self.device}, precision={self.precision}, refine_steps={self.refine_steps})")

    # -- public API ------------------------------------------------------------------------
    def encode(self, tiles: np.ndarray | Sequence[np.ndarray], bits: int | None = None,
               halo: int = 0, sides: Sequence[Sides] | None = None,
               ranges: Sequence[tuple[int, int]] | None = None) -> list[bytes]:
        """One self-describing string per tile.

        ``halo`` > 0: each array is the tile plus ``16 * halo`` pixels of its neighbours on each
        side (the tile's size a multiple of the model's factor); the analysis transform runs
        over all of it and keeps the tile's own latent, continuous with its neighbours'.
        ``sides``: per tile, the latent pixels of context actually present (top, bottom, left,
        right), each 0..halo: a tile at a scene's edge has none beyond it, so the transform
        meets the edge as it would coding the scene whole.

        Args:
            tiles: uint8 / uint16 ``C x H x W`` arrays (or one ``B x C x H x W`` array).
            bits: significant bits, mapped to [0, 1] by ``2**bits - 1``; default 8 for uint8 and
                the tile's own bit length (at least 8) for uint16, so a 12-bit sensor is not
                scaled by 65535.
            halo: latent pixels of neighbour context around each tile.
            sides: per tile, context present (top, bottom, left, right); default ``halo`` each.
            ranges: per band ``(lo, hi)``, the values mapped to the model's 0 and 1 (integers,
                ``0 <= lo < hi <= 2**bits - 1``), the same for every tile of the call; None:
                ``0 .. 2**bits - 1``. Every value of the tiles must lie in its band's range.

        Returns:
            One tile string per tile.

        Raises:
            CodecError: an unsupported dtype or shape, values above ``bits`` or outside
                ``ranges``, bad ``sides`` or bad ``ranges``.
        """
        return self._encode(tiles, bits, halo=halo, sides=sides, ranges=ranges)[0]

    def encode_with_reconstruction(self, tiles: np.ndarray | Sequence[np.ndarray],
                                   bits: int | None = None,
                                   ranges: Sequence[tuple[int, int]] | None = None
                                   ) -> tuple[list[bytes], list[np.ndarray]]:
        """Strings plus the pixels the decoder will produce, computed on the encoder side from its
        own quantized latent (for tests and for measuring quality without a decode pass).

        Args:
            tiles: as :meth:`encode`.
            bits: as :meth:`encode`.
            ranges: as :meth:`encode`.

        Returns:
            The strings and, per tile, the decoded pixels the strings will give.
        """
        return self._encode(tiles, bits, reconstruct=True, ranges=ranges)

    def decode(self, strings: Iterable[bytes]) -> list[np.ndarray]:
        """Each tile from its own latent alone (a scene decoder with neighbours uses
        :meth:`decode_latents` and :meth:`synthesize` instead, for seam-free tiles).

        Args:
            strings: tile strings written by these weights.

        Returns:
            Per tile, a ``C x H x W`` array in its original dtype.

        Raises:
            CodecError: a damaged or foreign string (its subclass names the tile and the problem).
            WeightsMismatchError: a string written by other weights.
        """
        parsed = self._parse(strings)
        jobs = [(t, g, streams) for t, p in enumerate(parsed) for g, streams in enumerate(p.groups)]
        images = self._run_decode(jobs, [p.header for p in parsed])
        return [self._assemble(p.header, images[t]) for t, p in enumerate(parsed)]

    def decode_latents(self, strings: Iterable[bytes]) -> tuple[list[TileHeader], list[list[torch.Tensor]]]:
        """The headers and, per tile, the decoded latent ``y_hat`` of each band group (float64,
        M x H/16 x W/16, exact on every machine): the inputs of :meth:`synthesize`.

        Args:
            strings: tile strings written by these weights.

        Returns:
            The headers, and per tile a list of latents, one per band group.

        Raises:
            CodecError: as :meth:`decode`.
        """
        parsed = self._parse(strings)
        jobs = [(t, g, streams) for t, p in enumerate(parsed) for g, streams in enumerate(p.groups)]
        latents = self._run_decode(jobs, [p.header for p in parsed], synthesize=False)
        return ([p.header for p in parsed],
                [[latents[t][g] for g in sorted(latents[t])] for t in range(len(parsed))])

    def synthesize(self, headers: Sequence[TileHeader], windows: Sequence[Sequence[torch.Tensor]],
                   halo: int, sides: Sequence[Sides] | None = None) -> list[np.ndarray]:
        """Tiles from latent windows: ``windows[t][g]`` is band group ``g`` of tile ``t``'s latent
        with ``halo`` latent pixels of its neighbours on each side (or ``sides[t]``: top, bottom,
        left, right); the synthesis runs over the window and keeps the tile, so neighbouring
        tiles join as if decoded in one piece.

        Args:
            headers: the tiles' headers (from :meth:`decode_latents`).
            windows: per tile, per band group, the latent window.
            halo: latent pixels of context on each side of every window.
            sides: per tile, context actually present (top, bottom, left, right).

        Returns:
            Per tile, a ``C x H x W`` array in its original dtype.
        """
        f = self.latent_stride
        sides = list(sides) if sides is not None else [(int(halo),) * 4] * len(windows)
        jobs = [(t, g, w) for t, ws in enumerate(windows) for g, w in enumerate(ws)]
        by_shape: dict[tuple, list] = defaultdict(list)
        for job in jobs:
            by_shape[tuple(job[2].shape)].append(job)
        images: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
        for shape, group in by_shape.items():
            for i in range(0, len(group), self.batch_size):
                batch = group[i:i + self.batch_size]
                self._set_rates([headers[t] for t, _, _ in batch])
                x = self._synthesize(torch.stack([w for _, _, w in batch]))
                for (t, g, _), img in zip(batch, x):
                    top, bottom, left, right = sides[t]
                    images[t][g] = img[:, f * top: img.shape[1] - f * bottom,
                                       f * left: img.shape[2] - f * right]
        return [self._assemble(h, images[t]) for t, h in enumerate(headers)]

    def _parse(self, strings: Iterable[bytes]) -> list[TileString]:
        parsed = []
        for t, s in enumerate(strings):
            try:
                parsed.append(unpack(s))
            except CodecError as e:
                raise type(e)(f"tile {t}: {e}") from e
        for t, p in enumerate(parsed):
            self._check_origin(p.header)
            self._check_layout(t, p)
        return parsed

    @staticmethod
    def header(string: bytes) -> TileHeader:
        """A string's header without decoding it (e.g. which weights and version wrote a store's tiles).

        Args:
            string: a tile string.

        Returns:
            Its header.

        Raises:
            CodecError: see :func:`geocompress.codec.format.read_header`.
        """
        return read_header(string)[0]

    # -- internals -------------------------------------------------------------------------
    def _check_origin(self, h: TileHeader) -> None:
        if h.arch != self.arch or h.digest != bytes.fromhex(self.digest[:16]):
            raise WeightsMismatchError(
                f"tile was encoded by {h.arch} weights {h.digest.hex()} (quality {h.quality}); this "
                f"codec is {self.arch} weights {self.digest[:16]} (quality {self.quality}): load "
                f"the codec that wrote it")
        self._check_binding(h)
        if self.variable_rate != (h.rate is not None):
            raise CorruptStreamError(
                f"tile header {'lacks' if self.variable_rate else 'carries'} a rate level, which "
                f"{self.arch} weights {'always write' if self.variable_rate else 'never write'}")
        if h.rate is not None:
            try:
                self.model.check_level(h.rate)
            except ValueError as e:
                raise CorruptStreamError(f"tile header: {e}") from None

    def version_for(self, ranges: bool) -> int:
        """The format version these weights write tiles in, with value ranges or without.

        Args:
            ranges: the tiles carry value ranges.

        Returns:
            :data:`RANGE_VERSION`, else the weights' own newest version.
        """
        return RANGE_VERSION if ranges else max(v for v in self.versions() if v != RANGE_VERSION)

    def versions(self) -> tuple[int, ...]:
        """The tile-string format versions these weights have written (see LEGACY_WEIGHTS).

        Returns:
            The format versions, newest last.
        """
        if self.variable_rate:
            return (RATE_VERSION, RANGE_VERSION)
        return (*(LEGACY_VERSIONS if self.digest[:16] in LEGACY_WEIGHTS else (FORMAT_VERSION,)),
                RANGE_VERSION)

    def _check_binding(self, h: TileHeader) -> None:
        """The header fields that the weights fix, as these weights write them.

        The CRC binds nothing against an edit (anyone can recompute it); the weights digest in the
        header names the weights, and the weights fix the quality byte and the format version.

        Raises:
            CorruptStreamError: a quality other than the weights' own (a variable-rate model's
                level travels in the rate field; its quality byte is 0), or a format version
                these weights never wrote (a downgrade changes how the payload is read).
        """
        quality = 0 if self.variable_rate else self.quality
        if h.quality != quality:
            raise CorruptStreamError(
                f"tile header says quality {h.quality}, but {self.arch} weights "
                f"{self.digest[:16]} write quality {quality}: the header was altered")
        if h.version not in self.versions():
            raise CorruptStreamError(
                f"tile header says format version {h.version}, which {self.arch} weights "
                f"{self.digest[:16]} never wrote (they write version "
                f"{' or '.join(map(str, self.versions()))}): the header was altered")

    def _set_rates(self, headers: Sequence[TileHeader]) -> None:
        """A variable-rate model's inverse gains for each tile of a batch, from its header."""
        if self.variable_rate:
            self.model.set_rate(torch.tensor([h.rate for h in headers], dtype=torch.float64))

    def _check_layout(self, t: int, p: TileString) -> None:
        """Every header field consistent with this codec before any byte reaches a decoder: a
        forged string with a valid CRC must not make it allocate or read what it should not."""
        h = p.header
        if (h.pad_h, h.pad_w) != self._padded(h.height, h.width):
            raise CorruptStreamError(
                f"tile {t}: header pads {h.height} x {h.width} to {h.pad_h} x {h.pad_w}; this codec "
                f"pads it to {self._padded(h.height, h.width)}")
        if h.height * h.width > MAX_DECODE_PIXELS:
            raise CodecError(f"tile {t}: {h.height} x {h.width} is larger than a tile this codec "
                             f"decodes ({MAX_DECODE_PIXELS} pixels); cut the scene into tiles")
        try:
            self.check_work(h.channels, h.height, h.width)
        except CodecError as e:
            raise CorruptStreamError(f"tile {t}: damaged or forged header: {e}") from None
        if len(p.groups) != len(self._groups(h.channels)):
            raise CorruptStreamError(f"tile {t}: {h.channels} bands need "
                                     f"{len(self._groups(h.channels))} band groups, the string "
                                     f"holds {len(p.groups)}")
        expected = {"factorized": 1}.get(self.coder.kind, 2)
        for g, streams in enumerate(p.groups):
            if len(streams) != expected:
                raise CorruptStreamError(f"tile {t} group {g} holds {len(streams)} streams; "
                                         f"{self.arch} writes {expected}")

    def check_work(self, channels: int, height: int, width: int) -> None:
        """Refuse a tile of more work than this codec writes or decodes, before any work.

        Args:
            channels, height, width: the tile's bands and size before padding.

        Raises:
            CodecError: more than MAX_BAND_GROUPS band groups, or band groups x padded pixels
                above MAX_DECODE_WORK (the cost of decoding grows with both: a header must not
                ask for more than the largest tile the encoder produces).
        """
        groups = len(self._groups(channels))
        ph, pw = self._padded(height, width)
        if groups > MAX_BAND_GROUPS:
            raise CodecError(f"{channels} bands make {groups} band groups of {self.group}; this "
                             f"codec codes at most {MAX_BAND_GROUPS} ({MAX_BAND_GROUPS * self.group} "
                             f"bands) per tile")
        if groups * ph * pw > MAX_DECODE_WORK:
            side = int(math.sqrt(MAX_DECODE_WORK / groups)) // self.factor * self.factor
            raise CodecError(f"{channels} bands of {height} x {width} pixels are more than this "
                             f"codec codes in one tile ({MAX_DECODE_WORK} band-group pixels): "
                             f"use tiles of at most {side} x {side} pixels for {channels} bands")

    def _bits(self, tile: np.ndarray, bits: int | None) -> int:
        if tile.dtype not in SUPPORTED_DTYPES:
            raise CodecError(f"unsupported tile dtype {tile.dtype}: geocompress codes uint8 and "
                             f"uint16 tiles")
        native = 8 * tile.dtype.itemsize
        if bits is None:  # the tile's own range: a 12-bit sensor in uint16 is not scaled by 65535
            b = native if native == 8 or not tile.size else max(8, int(tile.max()).bit_length())
        else:
            b = int(bits)
        if not 1 <= b <= native:
            raise CodecError(f"bits={b} is not possible for {tile.dtype} tiles")
        if tile.size and int(tile.max()) > 2 ** b - 1:
            raise CodecError(f"tile has values up to {int(tile.max())}, more than bits={b} allow "
                             f"({2 ** b - 1})")
        return b

    @staticmethod
    def _ranges(t: int, tile: np.ndarray, bits: int, ranges) -> tuple[tuple[int, int], ...] | None:
        """The header's ranges for ``tile`` (None: ``0 .. 2**bits - 1``), checked against it.

        Raises:
            CodecError: ranges that are not valid for the tile, or a value outside its band's.
        """
        if ranges is None:
            return None
        try:
            rng = tuple((int(lo), int(hi)) for lo, hi in ranges)
            check_ranges(rng, tile.shape[0], bits)
        except (TypeError, ValueError) as e:
            raise CodecError(f"tile {t}: bad value ranges: {e}") from None
        r = np.asarray(rng, dtype=np.float64)
        flat = tile.reshape(tile.shape[0], -1)
        if flat.size and (bool((flat.min(axis=1) < r[:, 0]).any())
                          or bool((flat.max(axis=1) > r[:, 1]).any())):
            raise CodecError(f"tile {t} has values outside its bands' value ranges {list(rng)}")
        return rng

    def _groups(self, c: int) -> list[list[int]]:
        """Band indices of each group of ``self.group`` bands (a short last group repeats)."""
        n, out = self.group, []
        for start in range(0, c, n):
            idx = list(range(start, min(start + n, c)))
            out.append(idx + [idx[-1]] * (n - len(idx)))
        return out

    def _padded(self, h: int, w: int) -> tuple[int, int]:
        f = self.factor
        return math.ceil(h / f) * f, math.ceil(w / f) * f

    def _encode(self, tiles, bits, reconstruct: bool = False, halo: int = 0,
                sides: Sequence[Sides] | None = None, ranges=None):
        tiles = [t[None] if t.ndim == 2 else t for t in _as_tiles(tiles)]
        headers, jobs = [], []
        f = self.latent_stride
        if not 0 <= halo <= 255:
            raise CodecError(f"halo must be 0..255 latent pixels, got {halo}")
        sides = [tuple(int(v) for v in sd) for sd in sides] if sides is not None else [(int(halo),) * 4] * len(tiles)
        if len(sides) != len(tiles) or any(len(sd) != 4 or not all(0 <= v <= halo for v in sd)
                                           for sd in sides):
            raise CodecError(f"sides must give (top, bottom, left, right) context of 0..{halo} "
                             f"latent pixels for each of the {len(tiles)} tiles")
        for t, tile in enumerate(tiles):
            if tile.ndim != 3 or 0 in tile.shape:
                raise CodecError(f"tile {t} has shape {tile.shape}; expected non-empty C x H x W")
            top, bottom, left, right = sides[t]
            inner = (tile.shape[1] - f * (top + bottom), tile.shape[2] - f * (left + right))
            if halo and (min(inner) <= 0 or any(n % self.factor for n in inner)):
                raise CodecError(f"tile {t} has shape {tile.shape}: with halo {halo} it must be a "
                                 f"tile whose sides are multiples of {self.factor} plus "
                                 f"{f} x {sides[t]} pixels of context (top, bottom, left, right)")
            if tile.shape[2] <= 4 < tile.shape[0] and tile.shape[0] >= 4 * tile.shape[2]:
                raise CodecError(f"tile {t} has shape {tile.shape}: that looks like H x W x C (an "
                                 f"image array); the codec takes C x H x W, e.g. "
                                 f"tile.transpose(2, 0, 1)")
            b = self._bits(tile, bits)
            rng = self._ranges(t, tile, b, ranges)
            c, (h, w) = tile.shape[0], inner
            if max(h, w) > 65535 or c > 65535:
                raise CodecError(f"tile {t} is too large ({tile.shape}); cut the scene into tiles")
            try:
                self.check_work(c, h, w)
            except CodecError as e:
                raise CodecError(f"tile {t}: {e}") from None
            ph, pw = self._padded(h, w)
            headers.append(TileHeader(self.arch, bytes.fromhex(self.digest[:16]),
                                      0 if self.variable_rate else self.quality,
                                      tile.dtype, b, c, h, w, ph, pw, halo=int(halo),
                                      rate=self.rate, ranges=rng))
            lo, span = headers[-1].band_scale()  # what the decoder maps back with
            for g, idx in enumerate(self._groups(c)):
                scale = (lo[idx, None, None], span[idx, None, None])
                jobs.append((t, g, (tile, idx, scale, sides[t])))  # scaled per batch
        streams, recon = self._run_encode(jobs, headers, reconstruct)
        strings = [pack(TileString(headers[t], streams[t])) for t in range(len(tiles))]
        if not reconstruct:
            return strings, None
        return strings, [self._assemble(headers[t], recon[t]) for t in range(len(tiles))]

    def _batches(self, jobs, headers, context: bool = False):
        """Jobs grouped by padded size and format version (one latent shape and symbol order),
        with ``context`` also by the context present on each side (one window shape)."""
        by_size = defaultdict(list)
        for job in jobs:
            h = headers[job[0]]
            by_size[(h.pad_h, h.pad_w, h.version, job[2][3] if context else h.halo)].append(job)
        for key, group in by_size.items():
            for i in range(0, len(group), self.batch_size):
                yield key, group[i:i + self.batch_size]

    @torch.no_grad()
    def _run_encode(self, jobs, headers, reconstruct):
        streams: dict[int, list] = defaultdict(list)
        recon: dict[int, dict[int, np.ndarray]] = defaultdict(dict)
        order = {(t, g): i for i, (t, g, _) in enumerate(jobs)}
        out_streams: dict[tuple[int, int], list[bytes]] = {}
        f = self.latent_stride
        for (ph, pw, _, (top, bottom, left, right)), batch in self._batches(jobs, headers, True):
            # each tile padded on its own: tiles of different sizes share a padded size
            full_h, full_w = ph + f * (top + bottom), pw + f * (left + right)
            x = torch.stack([
                F.pad(torch.from_numpy((tile[idx].astype(np.float64) - lo) / span)[None],
                      (0, full_w - tile.shape[2], 0, full_h - tile.shape[1]), mode="replicate")[0]
                for _, _, (tile, idx, (lo, span), _) in batch])
            x = x.to(self.device, self.dtype)
            if self.variable_rate:
                self.model.set_rate(self.rate)
            y = self.transforms(self.model.g_a, x)
            if top or bottom or left or right:  # the tile's own latent, its neighbours in view
                y = y[..., top:y.shape[-2] - bottom, left:y.shape[-1] - right].contiguous()
                x = x[..., f * top:x.shape[-2] - f * bottom, f * left:x.shape[-1] - f * right]
            if self.refine_steps:
                y = self._refine(x, y, [headers[t] for t, _, _ in batch])
            s, y_hat = self.coder.encode(y.clamp(-LATENT_LIMIT, LATENT_LIMIT))
            for (t, g, _), st in zip(batch, s):
                out_streams[(t, g)] = st
            if reconstruct:
                x_hat = self._synthesize(y_hat)
                for (t, g, _), img in zip(batch, x_hat):
                    recon[t][g] = img
        for key in sorted(order, key=order.get):
            streams[key[0]].append(out_streams[key])
        return streams, recon

    @torch.no_grad()
    def _run_decode(self, jobs, headers, synthesize: bool = True):
        images: dict[int, dict[int, Any]] = defaultdict(dict)
        for (ph, pw, version, _), batch in self._batches(jobs, headers):
            try:  # format 3 on: each stream must be what the encoder writes (no end marker in rANS)
                y_hat = self.coder.decode([st for _, _, st in batch], (ph // 16, pw // 16),
                                          order=SYMBOL_ORDER[version], canonical=version >= 3)
            except NonCanonicalStream as e:
                t = batch[e.positions[0]][0]
                raise CorruptStreamError(
                    f"tile {t}: its latent stream is not what an encoder writes for what it decodes "
                    f"to (truncated, extended or forged bytes)") from None
            except (RuntimeError, ValueError, OverflowError, TypeError, IndexError) as e:
                tiles = sorted({t for t, _, _ in batch})
                raise CodecError(f"entropy decoding of tile(s) {tiles} failed (damaged or forged "
                                 f"bytes): {type(e).__name__}: {e}") from e
            for (t, _, _), y in zip(batch, y_hat):
                if not bool(torch.isfinite(y).all()) or float(y.abs().max()) > LATENT_LIMIT:
                    raise CorruptStreamError(
                        f"tile {t}: its streams decode to latent values no encoder writes (beyond "
                        f"+-{LATENT_LIMIT:g} or not finite): damaged or forged bytes")
            if not synthesize:
                for (t, g, _), y in zip(batch, y_hat):
                    images[t][g] = y
                continue
            self._set_rates([headers[t] for t, _, _ in batch])
            for (t, g, _), img in zip(batch, self._synthesize(y_hat)):
                images[t][g] = img
        return images

    def _refine(self, x: torch.Tensor, y: torch.Tensor, headers: list[TileHeader]) -> torch.Tensor:
        """Refined latents of a batch, in float32 (module docstring); padding is not counted."""
        if self._refine_model is None:
            self._refine_model = (self.model if self.dtype == torch.float32
                                  else copy.deepcopy(self.model).float())
        mask = torch.zeros((x.shape[0], 1, *x.shape[-2:]), dtype=torch.float32, device=x.device)
        for i, h in enumerate(headers):
            mask[i, :, :h.height, :h.width] = 1
        y32 = refine_latents(self._refine_model, x.float(), y.float(), self.lmbda, self.refine_steps,
                             self.refine_lr, mask=mask)
        return y32.to(self.dtype)

    def _synthesize(self, y_hat: torch.Tensor) -> np.ndarray:
        x_hat = self.transforms(self.model.g_s, y_hat).clamp_(0, 1)
        return x_hat.to(torch.float64).cpu().numpy()

    def _assemble(self, h: TileHeader, groups: dict[int, np.ndarray]) -> np.ndarray:
        bands = []
        for g in sorted(groups):
            n = min(self.group, h.channels - g * self.group)
            bands.append(groups[g][:n, :h.height, :h.width])
        x = np.concatenate(bands, axis=0)
        lo, span = h.band_scale()
        return np.clip(np.rint(x * span[:, None, None] + lo[:, None, None]),
                       lo[:, None, None], (lo + span)[:, None, None]).astype(h.dtype)


def load_codec(choice: CodecChoice | str = "mgssnet", quality: float | None = None, *,
               halo_prior: bool = False, digest: str | None = None, **options: Any) -> TileCodec:
    """A :class:`TileCodec`: from a checkpoint file, the shipped weights at a quality, or (with
    ``pretrained=False``) the architecture's fixed-seed initialisation.

    Args:
        choice: a :class:`~geocompress.codec.choice.CodecChoice`, or an architecture name.
        quality: a shipped quality, or a variable-rate model's level on its continuous scale
            (default: the choice's; else the shipped middle quality, a checkpoint's own, or a
            variable-rate checkpoint's ``default_quality``, else level 4).
        halo_prior: the quality's entropy half refitted for halo-coded tiles, where one ships
            (:func:`~geocompress.codec.weights.load_shipped`): stores written with halo coding
            decode with it.
        digest: a store's weights digest: picks whichever shipped weights of the quality have it.
        **options: :class:`~geocompress.codec.choice.CodecChoice` fields overriding the choice's
            (``checkpoint=``, ``precision=``, ``batch_size=``, ``refine_steps=``, ``device=``,
            ``pretrained=``, ``arch=``); anything else is architecture configuration for
            ``pretrained=False`` (``N=32``).

    Returns:
        The codec, its weights verified against the shipped digest where they are shipped.

    Raises:
        WeightsError: a missing, damaged or foreign weights file, or an unknown quality.
        ValueError: an unknown precision, or a level outside a variable-rate model's range.

    Examples:
        >>> import geocompress
        >>> codec = geocompress.load_codec("mgssnet", pretrained=False, N=16, M=24)
        >>> codec.arch, codec.quality
        ('mgssnet', 0)
    """
    if isinstance(choice, str):
        choice = CodecChoice.of(**{"arch": choice, **options})
    elif options:
        choice = CodecChoice.of(**{**asdict(choice), **options})
    if quality is None:
        quality = choice.quality
    if choice.checkpoint is not None:
        model = load_checkpoint(choice.checkpoint)
        meta = getattr(model, "meta", {})
        if hasattr(model, "set_rate"):
            q = float(quality if quality is not None else meta.get("default_quality", 4.0))
        else:
            q = int(quality or meta.get("quality", 0))
    elif choice.pretrained:
        model, q = load_shipped(choice.arch, quality, halo_prior=halo_prior, digest=digest)
    else:
        model = untrained(choice.arch, **choice.config)
        q = float(quality if quality is not None else 4.0) if hasattr(model, "set_rate") else 0
    return TileCodec(model, quality=q, device=choice.device, precision=choice.precision,
                     batch_size=choice.batch_size, refine_steps=choice.refine_steps)
