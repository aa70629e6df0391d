"""Entropy coding of latents with CompressAI's entropy models and rANS coder, batched and exact.

Follows CompressAI's model / entropy split: transforms come from the model (``g_a``, ``h_a``,
``g_s``), CDF tables from its ``EntropyBottleneck`` / ``GaussianConditional`` buffers (stored in
the checkpoint, never recomputed at decode time, since recomputing them on another device could
change a table entry), and the scale / mean predictions that select CDFs come from
:mod:`geocompress.codec.exact` so that they are identical on every machine.

Four latent structures cover the registry:

* ``factorized`` (bmshj2018-factorized): y with the entropy bottleneck;
* ``scale`` (bmshj2018-hyperprior): z with the bottleneck, y with zero-mean Gaussians;
* ``mean-scale`` (mbt2018-mean): Gaussians with means;
* ``joint`` (mbt2018, cheng2020-attn, mgssnet): hyperprior + masked 5x5 context model, coded in
  raster order. All tiles of a batch advance through the latent positions in lockstep: one batched
  context / entropy-parameter evaluation per position for the whole batch, one rANS stream per tile.
"""

from __future__ import annotations

import numpy as np
import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.models import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior
from torch import Tensor

from . import compressai_adapter as cai
from .decoding import NonCanonicalStream
from .rans import RASTER, WAVEFRONT, CdfTable, padded, schedule  # noqa: F401 - RASTER re-exported
from .exact import ExactNet, _Layer, no_cudnn, to_grid

Streams = list[bytes]


def structure(model: torch.nn.Module) -> str:
    """Which of the four latent structures (module docstring) a model has, read from its parts so
    that any registry model (or a subclass) is coded by the matching path.

    Args:
        model: a CompressAI-style model.

    Returns:
        ``"joint"``, ``"mean-scale"``, ``"scale"`` or ``"factorized"``.

    Raises:
        TypeError: the model has none of these structures, so it cannot be entropy-coded here.
    """
    if hasattr(model, "context_prediction") and hasattr(model, "entropy_parameters"):
        return "joint"
    if isinstance(model, MeanScaleHyperprior):
        return "mean-scale"
    if isinstance(model, ScaleHyperprior):
        return "scale"
    if isinstance(model, FactorizedPrior) or (
            hasattr(model, "entropy_bottleneck") and not hasattr(model, "gaussian_conditional")):
        return "factorized"
    raise TypeError(f"don't know how to entropy-code {type(model).__name__}")


def _cdf_table(gc) -> CdfTable:
    """A GaussianConditional's CDF rows, as the coder takes them."""
    cdf, lengths, offsets = cai.cdf_tables(gc)
    return CdfTable(cdf.cpu().numpy(), lengths.cpu().numpy(), offsets.cpu().numpy())


class LatentCoder:
    """Codes a batch of latents ``y`` to per-image lists of byte streams, and back to ``y_hat``."""

    def __init__(self, model: torch.nn.Module, transforms=None) -> None:
        self.model = model
        self.transforms = transforms  # runs h_a in the codec's precision (None: as the model is)
        self.kind = structure(model)
        device = next(model.parameters()).device
        if self.kind != "factorized":
            self.h_s = ExactNet(model.h_s, device)
            self.gc = model.gaussian_conditional
            self.table = _cdf_table(self.gc)
        if self.kind == "joint":
            self.ctx = _Layer(model.context_prediction, device)
            self.ep = ExactNet(model.entropy_parameters, device)
            k = model.context_prediction.kernel_size[0]
            self.k, self.pad = k, k // 2
            o, cin = self.ctx.weight.shape[:2]
            # causal taps x channels -> outputs: rows in the order the loop gathers them
            w = self.ctx.weight.reshape(o, cin, -1)[:, :, self.ctx.taps]
            self.ctx_matrix = w.permute(2, 1, 0).reshape(-1, o).contiguous()
        if hasattr(model, "entropy_bottleneck"):
            # the hyper latent's medians in float64, whatever the transforms run in: an encoder
            # and a decoder in different precisions then dequantize z identically
            self.z_medians = cai.bottleneck_medians(model.entropy_bottleneck).detach().to(torch.float64)

    # -- helpers ---------------------------------------------------------------------------
    def _indexes(self, scales: Tensor) -> Tensor:
        """CompressAI's ``build_indexes`` (index of the first table scale >= the bounded scale)
        as one ``searchsorted`` instead of a 64-step loop; identical results."""
        scales = self.gc.lower_bound_scale(scales)
        table = self.gc.scale_table[:-1].to(scales.dtype).contiguous()
        return torch.searchsorted(table, scales.contiguous().reshape(-1)).reshape(scales.shape).int()

    def _z(self, y: Tensor) -> tuple[list[bytes], Tensor]:
        m = self.model
        y_in = torch.abs(y) if self.kind == "scale" else y
        z = self.transforms(m.h_a, y_in) if self.transforms is not None else m.h_a(y_in)
        z_strings = m.entropy_bottleneck.compress(z.to(self.z_medians.dtype))
        return z_strings, self._z_hat(z_strings, z.shape[-2:])

    def _z_hat(self, z_strings: list[bytes], size) -> Tensor:
        """CompressAI's ``EntropyBottleneck.decompress``, with its medians in float64."""
        eb = self.model.entropy_bottleneck
        size = tuple(size)
        n = cai.table_rows(eb) * size[0] * size[1]
        z_strings = [padded(z, n) for z in z_strings]
        medians = self.z_medians.reshape(1, -1, *([1] * len(size)))
        medians = medians.expand(len(z_strings), -1, *size)
        return to_grid(cai.bottleneck_decompress(eb, z_strings, size, torch.float64, medians))

    # -- encode ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, y: Tensor, order: str = WAVEFRONT) -> tuple[list[Streams], Tensor]:
        """Returns the streams of each image and the quantized latent the decoder will rebuild.

        Args:
            y: latents, ``B x M x h x w``.
            order: the joint models' symbol order, :data:`WAVEFRONT` (format 2 and later) or
                :data:`RASTER` (format 1 strings).

        Returns:
            Per image its streams (``[z, y]``, or ``[y]`` for a factorized model), and ``y_hat`` in
            float64, exactly as :meth:`decode` will rebuild it (so the encoder can reconstruct
            without a decode pass).
        """
        m = self.model
        if self.kind == "factorized":
            strings = m.entropy_bottleneck.compress(y)
            y_hat = m.entropy_bottleneck.decompress(strings, tuple(y.shape[-2:]))
            return [[s] for s in strings], y_hat
        z_strings, z_hat = self._z(y)
        params = self.h_s(z_hat)
        if self.kind == "joint":
            y_strings, y_hat, _ = self._joint(params, y=y, order=order)
        else:
            scales, means = (params, None) if self.kind == "scale" else params.chunk(2, 1)
            idx = self._indexes(scales)
            y64 = y.to(torch.float64)  # symbols and y_hat exactly as the decoder rebuilds them
            y_strings = self.gc.compress(y64, idx, means)
            y_hat = self.gc.quantize(y64, "dequantize", means)
        return [[z, s] for z, s in zip(z_strings, y_strings)], y_hat

    # -- decode ----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, streams: list[Streams], y_size: tuple[int, int],
               order: str = WAVEFRONT, canonical: bool = False) -> Tensor:
        """The quantized latents rebuilt from streams, identical on every machine (exact scale and mean
        predictions, CDF tables from the checkpoint).

        Args:
            streams: per image, the streams :meth:`encode` returned.
            y_size: the latent's spatial size ``(h, w)`` (the header's padded size / 16).
            order: the symbol order the streams were written in (see :meth:`encode`).
            canonical: check that each latent stream is byte for byte what :meth:`encode` writes
                for the symbols it decoded to (the joint model; strings of format 3 on): rANS
                has no end marker, so a truncated or forged stream otherwise decodes to garbage
                without an error.

        Returns:
            ``y_hat``, ``B x M x h x w``, float64.

        Raises:
            NonCanonicalStream: with ``canonical``, a stream that is not.
        """
        m = self.model
        if self.kind == "factorized":
            n = cai.table_rows(m.entropy_bottleneck) * y_size[0] * y_size[1]
            return m.entropy_bottleneck.decompress([padded(s[0], n) for s in streams], y_size)
        z_size = (y_size[0] // 4, y_size[1] // 4)
        z_hat = self._z_hat([s[0] for s in streams], z_size)
        params = self.h_s(z_hat)
        channels = params.shape[1] // (1 if self.kind == "scale" else 2)
        y_strings = [padded(s[1], channels * y_size[0] * y_size[1]) for s in streams]
        if self.kind == "joint":
            _, y_hat, again = self._joint(params, strings=y_strings, order=order)
            bad = [t for t, (s, a) in enumerate(zip(streams, again)) if canonical and a != s[1]]
            if bad:
                raise NonCanonicalStream(bad)
            return y_hat
        scales, means = (params, None) if self.kind == "scale" else params.chunk(2, 1)
        idx = self._indexes(scales)
        return self.gc.decompress(y_strings, idx, torch.float64, means)

    # -- the autoregressive part, batched over tiles and positions ------------------------
    def _joint(self, params: Tensor, y: Tensor | None = None,
               strings: list[bytes] | None = None, order: str = WAVEFRONT) -> tuple[list[bytes], Tensor, list[bytes]]:
        """The joint model's coding: ``(streams, y_hat, [])`` encoding ``y``, or ``([], y_hat,
        re-encoded streams)`` decoding ``strings`` (what an encoder writes for the symbols decoded,
        for :meth:`decode`'s canonical check)."""
        with no_cudnn():
            return self._joint_loop(params, y, strings, order)

    def _joint_loop(self, params: Tensor, y: Tensor | None, strings: list[bytes] | None,
                    order: str) -> tuple[list[bytes], Tensor, list[bytes]]:
        """One step per group of :func:`schedule`: every tile of the batch and every position of
        the group in one gather, one context product, one entropy-parameter pass and one rANS
        call per tile. The latent is held channels-last and flattened (``b x positions x c``), so
        a step's causal neighbourhoods are a single index into it."""
        b, _, h, w = params.shape
        c, k, p = self.model.M, self.k, self.pad
        wp = w + 2 * p
        dev = params.device
        y_hat = params.new_zeros((b, (h + 2 * p) * wp, c))
        hyper = params.permute(0, 2, 3, 1).reshape(b, h * w, -1)
        taps = self.ctx.taps.to(dev)
        offsets = (taps // k) * wp + taps % k  # tap -> offset from the window's top-left
        encoding = y is not None
        symbols = torch.empty((b, h * w * c), dtype=torch.int64)
        indexes = torch.empty((b, h * w * c), dtype=torch.int32)
        if encoding:
            y_rows = y.to(torch.float64).permute(0, 2, 3, 1).reshape(b, h * w, c)
        else:
            decoders = []
            for s in strings:  # type: ignore[union-attr]
                d = RansDecoder()
                d.set_stream(s)
                decoders.append(d)
        done = 0
        for rows, cols in schedule(h, w, k, order):
            n = len(rows)
            rows_t, cols_t = torch.as_tensor(rows, device=dev), torch.as_tensor(cols, device=dev)
            window = (rows_t * wp + cols_t)[:, None] + offsets[None, :]          # n x taps
            ctx_in = y_hat[:, window].reshape(b * n, -1)                          # (b n) x (taps c)
            ctx = self._context_rows(ctx_in)
            pos = rows_t * w + cols_t
            gp = self.ep.rows(torch.cat((hyper[:, pos].reshape(b * n, -1), ctx), dim=1))
            scales, means = gp[:, :c], gp[:, c:]
            idx = self._indexes(scales).reshape(b, n * c)
            means = means.reshape(b, n, c)
            if encoding:
                sym = torch.round(y_rows[:, pos] - means)
                symbols[:, done:done + n * c] = sym.reshape(b, -1).to(torch.int64).cpu()
                indexes[:, done:done + n * c] = idx.cpu()
            else:
                idx_np = idx.cpu().numpy()
                out = np.empty((b, n * c), dtype=np.float64)
                for t in range(b):
                    sub, cdfs, lens, offs = self.table.subset(idx_np[t])
                    out[t] = decoders[t].decode_stream(sub, cdfs, lens, offs)
                symbols[:, done:done + n * c] = torch.from_numpy(out).to(torch.int64)
                indexes[:, done:done + n * c] = torch.from_numpy(idx_np)
                sym = torch.from_numpy(out).to(dev).reshape(b, n, c)
            y_hat[:, (rows_t + p) * wp + cols_t + p] = sym + means
            done += n * c
        y_hat = y_hat.reshape(b, h + 2 * p, wp, c)[:, p:p + h, p:p + w].permute(0, 3, 1, 2)
        y_hat = y_hat.contiguous()
        out = []
        for t in range(b):
            sub, cdfs, lens, offs = self.table.subset(indexes[t].numpy())
            out.append(RansEncoder().encode_with_indexes(symbols[t].tolist(), sub, cdfs, lens, offs))
        return (out, y_hat, []) if encoding else ([], y_hat, out)

    def _context_rows(self, cols: Tensor) -> Tensor:
        """The masked context convolution at many positions: causal taps only, exact."""
        self.ctx.bound(float(cols.abs().max()) if cols.numel() else 0.0)
        out = cols @ self.ctx_matrix
        if self.ctx.bias is not None:
            out = out + self.ctx.bias
        return to_grid(out)
