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

import torch
from compressai.ans import RansDecoder, RansEncoder
from compressai.models import FactorizedPrior, MeanScaleHyperprior, ScaleHyperprior
from torch import Tensor

from .exact import ExactNet, _Layer, no_cudnn, to_grid

Streams = list[bytes]


def structure(model: torch.nn.Module) -> str:
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


class _CdfTable:
    """A GaussianConditional's CDF rows as Python lists, converted once (not per call)."""

    def __init__(self, gc) -> None:
        lengths = gc._cdf_length.reshape(-1).int().tolist()
        cdf = gc._quantized_cdf.cpu()
        self.rows = [cdf[i, :n].tolist() for i, n in enumerate(lengths)]
        self.lengths = lengths
        self.offsets = gc._offset.reshape(-1).int().tolist()

    def subset(self, indexes: list[int]) -> tuple[list[int], list[list[int]], list[int], list[int]]:
        """Remap ``indexes`` onto only the rows they use: the coder's cost of marshalling tables
        is then proportional to what a position needs, not to the whole 64-row table."""
        used = sorted(set(indexes))
        where = {u: i for i, u in enumerate(used)}
        return ([where[i] for i in indexes], [self.rows[u] for u in used],
                [self.lengths[u] for u in used], [self.offsets[u] for u in used])


class LatentCoder:
    """Codes a batch of latents ``y`` to per-image lists of byte streams, and back to ``y_hat``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.kind = structure(model)
        device = next(model.parameters()).device
        if self.kind != "factorized":
            self.h_s = ExactNet(model.h_s, device)
            self.gc = model.gaussian_conditional
            self.table = _CdfTable(self.gc)
        if self.kind == "joint":
            self.ctx = _Layer(model.context_prediction, device)
            self.ep = ExactNet(model.entropy_parameters, device)
            k = model.context_prediction.kernel_size[0]
            self.k, self.pad = k, k // 2

    # -- helpers ---------------------------------------------------------------------------
    def _indexes(self, scales: Tensor) -> Tensor:
        """CompressAI's ``build_indexes`` (index of the first table scale >= the bounded scale)
        as one ``searchsorted`` instead of a 64-step loop; identical results."""
        scales = self.gc.lower_bound_scale(scales)
        table = self.gc.scale_table[:-1].to(scales.dtype).contiguous()
        return torch.searchsorted(table, scales.contiguous().reshape(-1)).reshape(scales.shape).int()

    def _z(self, y: Tensor) -> tuple[list[bytes], Tensor]:
        m = self.model
        z = m.h_a(torch.abs(y) if self.kind == "scale" else y)
        z_strings = m.entropy_bottleneck.compress(z)
        return z_strings, self._z_hat(z_strings, z.shape[-2:])

    def _z_hat(self, z_strings: list[bytes], size) -> Tensor:
        return to_grid(self.model.entropy_bottleneck.decompress(z_strings, tuple(size)))

    # -- encode ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, y: Tensor) -> tuple[list[Streams], Tensor]:
        """Returns the streams of each image and the quantized latent the decoder will rebuild."""
        m = self.model
        if self.kind == "factorized":
            strings = m.entropy_bottleneck.compress(y)
            y_hat = m.entropy_bottleneck.decompress(strings, tuple(y.shape[-2:]))
            return [[s] for s in strings], y_hat
        z_strings, z_hat = self._z(y)
        params = self.h_s(z_hat)
        if self.kind == "joint":
            y_strings, y_hat = self._joint(params, y=y)
        else:
            scales, means = (params, None) if self.kind == "scale" else params.chunk(2, 1)
            idx = self._indexes(scales)
            y64 = y.to(torch.float64)
            y_strings = self.gc.compress(y64, idx, means)
            y_hat = self.gc.quantize(y64, "dequantize", means)
        return [[z, s] for z, s in zip(z_strings, y_strings)], y_hat

    # -- decode ----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, streams: list[Streams], y_size: tuple[int, int]) -> Tensor:
        m = self.model
        if self.kind == "factorized":
            return m.entropy_bottleneck.decompress([s[0] for s in streams], y_size)
        z_size = (y_size[0] // 4, y_size[1] // 4)
        z_hat = self._z_hat([s[0] for s in streams], z_size)
        params = self.h_s(z_hat)
        y_strings = [s[1] for s in streams]
        if self.kind == "joint":
            return self._joint(params, strings=y_strings)[1]
        scales, means = (params, None) if self.kind == "scale" else params.chunk(2, 1)
        idx = self._indexes(scales)
        return self.gc.decompress(y_strings, idx, torch.float64, means)

    # -- the autoregressive part, batched over tiles ---------------------------------------
    def _joint(self, params: Tensor, y: Tensor | None = None,
               strings: list[bytes] | None = None) -> tuple[list[bytes], Tensor]:
        with no_cudnn():
            return self._joint_loop(params, y, strings)

    def _joint_loop(self, params: Tensor, y: Tensor | None,
                    strings: list[bytes] | None) -> tuple[list[bytes], Tensor]:
        b, _, h, w = params.shape
        c = self.model.M
        k, p = self.k, self.pad
        y_hat = params.new_zeros((b, c, h + 2 * p, w + 2 * p))
        encoding = y is not None
        if encoding:
            y = y.to(torch.float64)
            symbols: list[list[int]] = [[] for _ in range(b)]
            indexes: list[list[int]] = [[] for _ in range(b)]
        else:
            decoders = []
            for s in strings:  # type: ignore[union-attr]
                d = RansDecoder()
                d.set_stream(s)
                decoders.append(d)
        for i in range(h):
            for j in range(w):
                crop = y_hat[:, :, i:i + k, j:j + k]
                ctx = self.ctx.conv_valid(crop)
                gp = self.ep(torch.cat((params[:, :, i:i + 1, j:j + 1], ctx), dim=1), snap=False)
                scales, means = gp.chunk(2, 1)
                idx = self._indexes(scales).reshape(b, c).tolist()
                means = means.reshape(b, c)
                if encoding:
                    sym = torch.round(y[:, :, i, j] - means)
                    for t, (sy, ix) in enumerate(zip(sym.to(torch.int64).tolist(), idx)):
                        symbols[t] += sy
                        indexes[t] += ix
                else:
                    rows = []
                    for t in range(b):
                        sub, cdfs, lens, offs = self.table.subset(idx[t])
                        rows.append(decoders[t].decode_stream(sub, cdfs, lens, offs))
                    sym = torch.tensor(rows, dtype=torch.float64, device=means.device)
                y_hat[:, :, i + p, j + p] = sym + means
        y_hat = y_hat[:, :, p:p + h, p:p + w]
        if not encoding:
            return [], y_hat
        out = []
        for t in range(b):
            sub, cdfs, lens, offs = self.table.subset(indexes[t])
            out.append(RansEncoder().encode_with_indexes(symbols[t], sub, cdfs, lens, offs))
        return out, y_hat
