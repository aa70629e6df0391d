"""What every decoder of tile strings does, whatever runs its networks: parse, check, decode, assemble.

A tile string is checked against the weights before any byte reaches an entropy decoder: the
weights that wrote it (architecture and digest), the header fields those weights fix (quality
byte, format version, rate field), its layout (padding, band groups, streams per group) and the
work it asks for (:data:`MAX_DECODE_PIXELS`, :data:`MAX_BAND_GROUPS`, :data:`MAX_DECODE_WORK`): a
forged string with a valid CRC must not make a decoder allocate or read what it should not. A
decoded latent beyond :data:`LATENT_LIMIT` is refused naming the tile. Pixels are assembled from
the synthesis' band groups and mapped back to the header's values.

:class:`TileDecoder` holds all of that once, for the two decoders that share it:
:class:`~geocompress.codec.tile_codec.TileCodec` (PyTorch: every precision, encoding too) and
:class:`~geocompress.codec.numpy_decoder.NumpyDecoder` (NumPy and ONNX Runtime: a reader without
torch). A subclass supplies the networks (:meth:`TileDecoder._entropy_decode`,
:meth:`TileDecoder._synthesize_batch`, :meth:`TileDecoder._check_level`). This module imports
no torch.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import CodecError, CorruptStreamError, WeightsMismatchError
from .format import (FORMAT_VERSION, RANGE_VERSION, RATE_VERSION, SYMBOL_ORDER, TileHeader,
                     TileString, read_header, unpack)

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
# Weights that wrote tile strings before format 3 (2026-12-02): the shipped MGSSNet q1-q4 bases
# (2026-12-01) wrote versions 1 and 2 first. Every other weights' strings are of the one version
# their codec writes (3, or 4 for a variable-rate model), so an older version in their header is
# an edit (a downgrade to version 1 would decode the symbols in another order: wrong pixels).
LEGACY_VERSIONS = (1, 2, FORMAT_VERSION)
LEGACY_WEIGHTS = frozenset({
    "c3a7bf910a6b09c5", "f117b3f5662c8b15", "1fae0c64bff23a39", "4b8a1ed4cace3ea9"})


def check_level(level: Any, levels: int) -> float:
    """``level`` as a float, or a ``ValueError`` naming the range of a variable-rate model of
    ``levels`` levels.

    Args:
        level: the rate level asked for (fractional levels interpolate).
        levels: how many levels the model's gain tables hold.

    Returns:
        The level as a float.

    Raises:
        ValueError: not a number, or outside ``0 .. levels - 1``.
    """
    try:
        if isinstance(level, bool):
            raise TypeError(level)
        q = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"rate level must be a number, got {level!r}") from None
    if not (math.isfinite(q) and 0.0 <= q <= levels - 1):
        raise ValueError(f"rate level {level!r} is outside this model's range 0..{levels - 1}")
    return q


class NonCanonicalStream(ValueError):
    """Latent streams that decode, but are not what the encoder writes for what they decode to
    (truncated, extended or forged bytes): ``positions`` are the images of the batch concerned."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(f"latent stream(s) of batch position(s) {positions} are not canonical")
        self.positions = positions


class TileDecoder:
    """Tile strings to pixels for one set of weights: the checks and the bookkeeping (module
    docstring), with the networks left to a subclass.

    A subclass sets, before use: ``arch``, ``digest`` (hex), ``config``, ``variable_rate``,
    ``quality`` (a fixed-rate codec's shipped quality; a variable-rate one's level), ``kind``
    (:func:`geocompress.codec.entropy.structure`'s name), ``factor`` (the padding multiple),
    ``group`` (bands per band group), ``batch_size``, and implements the three hooks.
    """

    arch: str
    digest: str
    config: dict[str, Any]
    variable_rate: bool
    quality: float
    kind: str
    factor: int
    group: int
    batch_size: int
    latent_stride = 16  # pixels per latent pixel (g_a's downsampling)

    # -- the networks: a subclass's ---------------------------------------------------------
    def _entropy_decode(self, streams: list[list[bytes]], y_size: tuple[int, int], order: str,
                        canonical: bool) -> Sequence[Any]:
        """The quantized latents of a batch (``B x M x h x w``, float64, exact), as
        :meth:`geocompress.codec.entropy.LatentCoder.decode` rebuilds them.

        Raises:
            NonCanonicalStream: with ``canonical``, a stream that is not.
        """
        raise NotImplementedError

    def _synthesize_batch(self, y_hat: Any, headers: Sequence[TileHeader]) -> np.ndarray:
        """Pixels in [0, 1] (``B x C x H x W`` float64) from a batch of latents (or latent
        windows), each at its header's rate."""
        raise NotImplementedError

    def _check_level(self, level: float) -> None:
        """Raise ``ValueError`` for a rate level outside the weights' range (variable-rate)."""
        raise NotImplementedError

    @staticmethod
    def _stack(arrays: Sequence[Any]) -> Any:
        """One batch from latents of one shape (a subclass's array type)."""
        return np.stack([np.asarray(a) for a in arrays])

    @staticmethod
    def _latent_bad(y: Any) -> bool:
        """Whether a decoded latent holds values no encoder writes (not finite, or beyond
        :data:`LATENT_LIMIT`)."""
        y = np.asarray(y)
        return not bool(np.isfinite(y).all()) or (y.size > 0 and float(np.abs(y).max()) > LATENT_LIMIT)

    # -- public API ------------------------------------------------------------------------
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

    def decode_latents(self, strings: Iterable[bytes]) -> tuple[list[TileHeader], list[list[Any]]]:
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

    def synthesize(self, headers: Sequence[TileHeader], windows: Sequence[Sequence[Any]],
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
                x = self._synthesize_batch(self._stack([w for _, _, w in batch]),
                                           [headers[t] for t, _, _ in batch])
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
                f"tile was encoded by {h.arch} weights {h.digest.hex()} ("
                f"{'level %g' % h.rate if h.rate is not None else 'quality %d' % h.quality}); this "
                f"codec is {self.arch} weights {self.digest[:16]} (quality {self.quality}): load "
                f"the codec that wrote it")
        self._check_binding(h)
        if self.variable_rate != (h.rate is not None):
            raise CorruptStreamError(
                f"tile header {'lacks' if self.variable_rate else 'carries'} a rate level, which "
                f"{self.arch} weights {'always write' if self.variable_rate else 'never write'}")
        if h.rate is not None:
            try:
                self._check_level(h.rate)
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
        expected = {"factorized": 1}.get(self.kind, 2)
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

    def _run_decode(self, jobs, headers, synthesize: bool = True):
        images: dict[int, dict[int, Any]] = defaultdict(dict)
        for (ph, pw, version, _), batch in self._batches(jobs, headers):
            try:  # format 3 on: each stream must be what the encoder writes (no end marker in rANS)
                y_hat = self._entropy_decode([st for _, _, st in batch], (ph // 16, pw // 16),
                                             SYMBOL_ORDER[version], version >= 3)
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
                if self._latent_bad(y):
                    raise CorruptStreamError(
                        f"tile {t}: its streams decode to latent values no encoder writes (beyond "
                        f"+-{LATENT_LIMIT:g} or not finite): damaged or forged bytes")
            if not synthesize:
                for (t, g, _), y in zip(batch, y_hat):
                    images[t][g] = y
                continue
            pixels = self._synthesize_batch(y_hat, [headers[t] for t, _, _ in batch])
            for (t, g, _), img in zip(batch, pixels):
                images[t][g] = img
        return images

    def _assemble(self, h: TileHeader, groups: dict[int, np.ndarray]) -> np.ndarray:
        bands = []
        for g in sorted(groups):
            n = min(self.group, h.channels - g * self.group)
            bands.append(groups[g][:n, :h.height, :h.width])
        x = np.concatenate(bands, axis=0)
        lo, span = h.band_scale()
        return np.clip(np.rint(x * span[:, None, None] + lo[:, None, None]),
                       lo[:, None, None], (lo + span)[:, None, None]).astype(h.dtype)
