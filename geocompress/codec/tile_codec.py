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
from collections import defaultdict
from dataclasses import asdict
from typing import Any, Sequence

from geocompress._lazy import gc_paused

with gc_paused():  # torch and CompressAI's models first, without collections that free nothing
    import compressai.models  # noqa: F401 - (through geocompress's light CompressAI package)
    import numpy as np
    import torch
    import torch.nn.functional as F

from ..shipped import DEFAULT_ARCH
from .choice import CodecChoice
from .decoding import (LATENT_LIMIT, LEGACY_VERSIONS, LEGACY_WEIGHTS,  # noqa: F401 - re-exported
                       MAX_BAND_GROUPS, MAX_DECODE_PIXELS, MAX_DECODE_WORK, SUPPORTED_DTYPES, Sides,
                       TileDecoder)
from .entropy import LatentCoder
from .errors import CodecError
from .format import TileHeader, TileString, check_ranges, pack, quantize_rate
from .precision import Transforms, resolve_precision, weight_dtype
from .refine import refine_latents
from .weights import load_checkpoint_for, load_shipped, state_digest, untrained

REFINE_LR = 5e-3


def _as_tiles(tiles: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(tiles, np.ndarray):
        if tiles.ndim == 4:
            return list(tiles)
        if tiles.ndim in (2, 3):
            return [tiles]
        raise CodecError(f"expected tiles as B x C x H x W or C x H x W, got shape {tiles.shape}")
    return [np.asarray(t) for t in tiles]


class TileCodec(TileDecoder):
    """A model plus everything needed to turn tiles into strings: see the module docstring (the
    checks and bookkeeping of decoding are :class:`~geocompress.codec.decoding.TileDecoder`'s)."""

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
                raise CodecError("refinement is not available for variable-rate models yet "
                                 "(the fixed-rate ladder has it: --arch mgssnet)")
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
        self.kind = self.coder.kind
        self.factor = int(getattr(model, "downsampling_factor", 64))
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
                                   ranges: Sequence[tuple[int, int]] | None = None,
                                   halo: int = 0, sides: Sequence[Sides] | None = None
                                   ) -> tuple[list[bytes], list[np.ndarray]]:
        """Strings plus the pixels the decoder will produce, computed on the encoder side from its
        own quantized latent (for tests and for measuring quality without a decode pass).

        Args:
            tiles: as :meth:`encode`.
            bits: as :meth:`encode`.
            ranges: as :meth:`encode`.
            halo: as :meth:`encode`; the pixels are then drawn as a halo decode draws them, with
                the encoder's own (rounded) latent of the context standing in for the
                neighbours' decoded latents.
            sides: as :meth:`encode`.

        Returns:
            The strings and, per tile, the decoded pixels (the tile's own size) the strings give.
        """
        return self._encode(tiles, bits, reconstruct=True, ranges=ranges, halo=halo, sides=sides)

    # -- the decoder's networks (TileDecoder's hooks) --------------------------------------
    def _entropy_decode(self, streams, y_size, order, canonical):
        return self.coder.decode(streams, y_size, order=order, canonical=canonical)

    @torch.no_grad()
    def _synthesize_batch(self, y_hat, headers):
        self._set_rates(headers)
        return self._synthesize(y_hat)

    def _check_level(self, level: float) -> None:
        self.model.check_level(level)

    @staticmethod
    def _stack(arrays):
        return torch.stack(list(arrays))

    @staticmethod
    def _latent_bad(y) -> bool:
        return not bool(torch.isfinite(y).all()) or float(y.abs().max()) > LATENT_LIMIT

    def _set_rates(self, headers: Sequence[TileHeader]) -> None:
        """A variable-rate model's inverse gains for each tile of a batch, from its header."""
        if self.variable_rate:
            self.model.set_rate(torch.tensor([h.rate for h in headers], dtype=torch.float64))

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
            y = y_full = self.transforms(self.model.g_a, x)
            inner = (..., slice(top, y.shape[-2] - bottom), slice(left, y.shape[-1] - right))
            if top or bottom or left or right:  # the tile's own latent, its neighbours in view
                y = y[inner].contiguous()
                x = x[..., f * top:x.shape[-2] - f * bottom, f * left:x.shape[-1] - f * right]
            if self.refine_steps:
                y = self._refine(x, y, [headers[t] for t, _, _ in batch])
            s, y_hat = self.coder.encode(y.clamp(-LATENT_LIMIT, LATENT_LIMIT))
            for (t, g, _), st in zip(batch, s):
                out_streams[(t, g)] = st
            if reconstruct:
                x_hat = self._reconstruct(y_hat, y_full, inner, (top, bottom, left, right))
                for (t, g, _), img in zip(batch, x_hat):
                    recon[t][g] = img
        for key in sorted(order, key=order.get):
            streams[key[0]].append(out_streams[key])
        return streams, recon

    def _reconstruct(self, y_hat: torch.Tensor, y_full: torch.Tensor, inner: tuple,
                     sides: Sides) -> np.ndarray:
        """The tiles a decoder gets from ``y_hat``; with a halo it synthesizes each tile with its
        neighbours' latents around it (:meth:`TileDecoder.synthesize`): here the encoder's own
        latent of the context, rounded, stands in for theirs (a tile's edges drawn without them
        lose ~1 dB: its edge latents are interior ones)."""
        if not any(sides):
            return self._synthesize(y_hat)
        window = torch.round(y_full.clamp(-LATENT_LIMIT, LATENT_LIMIT)).to(y_hat.dtype)
        window[inner] = y_hat
        f = self.latent_stride
        top, bottom, left, right = sides
        img = self._synthesize(window)
        return img[..., f * top:img.shape[-2] - f * bottom, f * left:img.shape[-1] - f * right]

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



def load_codec(choice: CodecChoice | str = DEFAULT_ARCH, quality: float | None = None, *,
               halo_prior: bool = False, digest: str | None = None, **options: Any) -> TileCodec:
    """A :class:`TileCodec`: from a checkpoint file, the shipped weights at a quality, or (with
    ``pretrained=False``) the architecture's fixed-seed initialisation.

    Args:
        choice: a :class:`~geocompress.codec.choice.CodecChoice`, or an architecture name.
        quality: a shipped quality, or a variable-rate model's level on its continuous scale
            (default: the choice's; else the shipped default: a variable-rate model's ``default``
            level, a fixed-rate ladder's middle quality; a checkpoint's own, or a variable-rate
            checkpoint's ``default_quality``, else level 4).
        halo_prior: the quality's entropy half refitted for halo-coded tiles, where one ships
            (:func:`~geocompress.codec.weights.load_shipped`), or a checkpoint's where one lies
            beside it (:func:`~geocompress.codec.weights.checkpoint_halo_prior`): stores written
            with halo coding decode with it.
        digest: a store's weights digest: picks whichever shipped weights of the quality (or
            the checkpoint or its prior) have it.
        **options: :class:`~geocompress.codec.choice.CodecChoice` fields overriding the choice's
            (``checkpoint=``, ``precision=``, ``batch_size=``, ``refine_steps=``, ``device=``,
            ``pretrained=``, ``arch=``); anything else is architecture configuration for
            ``pretrained=False`` (``N=32``).

    Returns:
        The codec, its weights verified against the shipped digest where they are shipped.

    Raises:
        WeightsError: a missing, damaged or foreign weights file, or an unknown quality.
        ValueError: an unknown precision, a level outside a variable-rate model's range, or a
            quality other than a fixed-rate checkpoint's own.
        CodecError: a fractional quality for fixed-rate weights.

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
        model = load_checkpoint_for(choice.checkpoint, halo_prior=halo_prior, digest=digest)
        meta = getattr(model, "meta", {})
        if hasattr(model, "set_rate"):
            q = float(quality if quality is not None else meta.get("default_quality", 4.0))
        else:  # one rate per file: another quality would be recorded for weights not of it
            own = meta.get("quality")
            if own and quality is not None and float(quality) != float(own):
                raise ValueError(f"{choice.checkpoint} holds fixed-rate weights of quality {own}; "
                                 f"quality {quality} names other weights (leave the quality out)")
            q = quality if quality is not None else int(own or 0)
    elif choice.pretrained:
        model, q = load_shipped(choice.arch, quality, halo_prior=halo_prior, digest=digest)
    else:
        model = untrained(choice.arch, **choice.config)
        q = float(quality if quality is not None else 4.0) if hasattr(model, "set_rate") else (
            quality if quality is not None else 0)  # TileCodec refuses a fractional one
    return TileCodec(model, quality=q, device=choice.device, precision=choice.precision,
                     batch_size=choice.batch_size, refine_steps=choice.refine_steps)
