"""Tile strings decoded with NumPy and ONNX Runtime, without torch: the lazy view's reader.

Opening a store and reading a window is a reader's everyday call; with PyTorch it pays torch's
import and a heavier interpreter exit (issue 38; ``catalogs/benchmarks-startup.md``). This
decoder needs neither:

* the exact entropy path (hyper decoder, context model, entropy parameters) is fixed point carried
  by float64 (:mod:`.fixed_point`): NumPy's sums of grid values are exact in any order, so it
  rebuilds the very scales, means and CDF choices the PyTorch path does, bit for bit;
* the rANS coder is CompressAI's own extension, loaded without CompressAI's package (:mod:`.rans`);
* the synthesis ``g_s`` runs in float32 through ONNX Runtime: the graph the ``float32-onnx``
  precision mode runs, so pixels equal that mode's in PyTorch.

Its inputs are a *decoder bundle* per weights, written by the PyTorch side
(:func:`geocompress.codec.decoder_bundle.write_bundle`) into the cache
(``~/.cache/geocompress/decoders/<digest>``, ``GEOCOMPRESS_CACHE``): a manifest, the exact
networks' gridded weights and CDF tables (``entropy.npz``), and ``g_s.onnx``, both checksummed in
the manifest; a bundle that fails its checksums or names other weights is not used. Models with
the joint (autoregressive) structure are covered (MGSSNet, its variable-rate form); others decode
in PyTorch. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .decoding import NonCanonicalStream, TileDecoder, check_level
from .fixed_point import next_bound, to_grid
from .format import TileHeader
from .rans import CdfTable, ans, padded, schedule

BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
FILES = ("entropy.npz", "g_s.onnx")


def cache_root() -> Path:
    """geocompress's cache folder: ``GEOCOMPRESS_CACHE``, else ``$XDG_CACHE_HOME/geocompress``,
    else ``~/.cache/geocompress`` (ONNX graphs and decoder bundles, rebuilt when missing).

    Returns:
        The folder (not created here).
    """
    root = os.environ.get("GEOCOMPRESS_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "geocompress"


def bundle_dir(digest: str) -> Path:
    """Where the decoder bundle of the weights with ``digest`` lives.

    Args:
        digest: the weights' full hex digest (:func:`geocompress.codec.weights.state_digest`).

    Returns:
        The bundle's folder.
    """
    return cache_root() / "decoders" / str(digest)


def runtime_available() -> bool:
    """Whether ONNX Runtime is installed and not switched off (``GEOCOMPRESS_ONNX=0``), found
    without importing it.

    Returns:
        True where this decoder can run.
    """
    if os.environ.get("GEOCOMPRESS_ONNX", "1").strip() == "0":
        return False
    return importlib.util.find_spec("onnxruntime") is not None


def gains(table: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """A variable-rate model's gain vectors at continuous ``levels``, exponentially interpolated
    between the two nearest rows of ``table`` (log-gains, float32), computed in float32 exactly as
    every ONNX Runtime synthesis of these weights computes them (PyTorch's and this module's).

    Args:
        table: log-gains, ``levels x M``, float32.
        levels: one level per image.

    Returns:
        ``B x M x 1 x 1`` float32 gains.
    """
    table = np.asarray(table, dtype=np.float32)
    level = np.asarray(levels, dtype=np.float64)
    lo = np.clip(np.floor(level), 0, len(table) - 2).astype(np.int64)
    t = (level - lo).astype(np.float32)[:, None]
    one = np.float32(1.0)
    return np.exp(table[lo] * (one - t) + table[lo + 1] * t)[:, :, None, None]


class _Net:
    """A small network of the exact entropy path (its layers as the bundle lists them), on the
    fixed-point grid, with the same range checks as :class:`geocompress.codec.exact.ExactNet`."""

    def __init__(self, layers: list[dict], arrays: dict[str, np.ndarray], name: str) -> None:
        self.layers = []
        for i, spec in enumerate(layers):
            layer = dict(spec)
            if layer["kind"] in ("conv", "pointwise"):
                w = np.asarray(arrays[f"{name}.{i}.weight"], dtype=np.float64)
                b = arrays.get(f"{name}.{i}.bias")
                layer["weight"] = w
                layer["bias"] = None if b is None else np.asarray(b, dtype=np.float64)
                axes = tuple(range(1, w.ndim)) if layer["kind"] == "conv" else (0,)
                layer["row_sum"] = float(np.abs(w).sum(axis=axes).max())
                layer["bias_max"] = 0.0 if b is None else float(np.abs(layer["bias"]).max())
            self.layers.append(layer)

    @staticmethod
    def _bound(layer: dict, x: np.ndarray) -> None:
        next_bound(float(np.abs(x).max()) if x.size else 0.0, layer["row_sum"], layer["bias_max"],
                   layer["name"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The network on ``B x C x H x W`` (snapped to the grid first, as ExactNet does)."""
        x = to_grid(x)
        for layer in self.layers:
            kind = layer["kind"]
            if kind == "conv":
                self._bound(layer, x)
                x = to_grid(_conv2d(x, layer["weight"], layer["bias"], layer["stride"],
                                    layer["padding"]))
            elif kind == "pointwise":
                self._bound(layer, x)
                b, c, h, w = x.shape
                y = x.transpose(0, 2, 3, 1).reshape(-1, c) @ layer["weight"]
                if layer["bias"] is not None:
                    y = y + layer["bias"]
                x = to_grid(y.reshape(b, h, w, -1).transpose(0, 3, 1, 2))
            else:
                x = _activation(layer, x)
        return x

    def rows(self, x: np.ndarray) -> np.ndarray:
        """The network on ``n x channels`` rows (every convolution 1x1), already on the grid."""
        for layer in self.layers:
            if layer["kind"] == "pointwise":
                self._bound(layer, x)
                x = x @ layer["weight"]
                if layer["bias"] is not None:
                    x = x + layer["bias"]
                x = to_grid(x)
            elif layer["kind"] == "conv":
                raise ValueError(f"rows() needs 1x1 convolutions, {layer['name']} is not")
            else:
                x = _activation(layer, x)
        return x


def _activation(layer: dict, x: np.ndarray) -> np.ndarray:
    kind = layer["kind"]
    if kind == "leaky":
        return to_grid(np.where(x >= 0, x, x * layer["slope"]))
    if kind == "relu":
        return np.maximum(x, 0.0)
    if kind == "shuffle":
        r = int(layer["factor"])
        b, c, h, w = x.shape
        return (x.reshape(b, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
                .reshape(b, c // (r * r), h * r, w * r))
    if kind == "identity":
        return x
    raise ValueError(f"unknown layer kind {kind!r} in a decoder bundle")


def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: Sequence[int],
            padding: Sequence[int]) -> np.ndarray:
    """A dense 2-D convolution (cross-correlation, as PyTorch's) as one matrix product."""
    o, c, kh, kw = w.shape
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1]]                     # B x C x Ho x Wo x kh x kw
    bsz, _, ho, wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(bsz * ho * wo, c * kh * kw)
    y = cols @ w.reshape(o, -1).T
    if b is not None:
        y = y + b
    return y.reshape(bsz, ho, wo, o).transpose(0, 3, 1, 2)


def manifest_digest(manifest: dict) -> str:
    """The checksum a bundle's manifest carries of itself: SHA-256 of its canonical JSON without
    that entry (the layer lists, sizes and bounds it holds steer the decoding as much as the
    arrays do).

    Args:
        manifest: the manifest, with or without its ``manifest_sha256`` entry.

    Returns:
        The hex digest.
    """
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class BundleError(ValueError):
    """A decoder bundle that cannot be used (missing, damaged, for other weights, or of another
    bundle version): the caller decodes in PyTorch instead, and may write the bundle again."""


class NumpyDecoder(TileDecoder):
    """Decodes the tile strings of one set of weights from its bundle: see the module docstring.

    Args:
        folder: the bundle's folder (:func:`bundle_dir`).
        batch_size: tiles per synthesis batch.
        threads: ONNX Runtime's threads (None: ``OMP_NUM_THREADS``, else its default).

    Raises:
        BundleError: see :class:`BundleError`.
    """

    precision = "float32-onnx"
    device = "cpu"

    def __init__(self, folder: str | Path, batch_size: int = 8, threads: int | None = None) -> None:
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise BundleError(f"{folder}: no readable decoder bundle ({e})") from None
        if manifest.get("manifest_sha256") != manifest_digest(manifest):
            raise BundleError(f"{folder}: its manifest does not match its checksum (damaged cache, "
                              f"or written by another version)")
        if manifest.get("bundle_version") != BUNDLE_VERSION or manifest.get("kind") != "joint":
            raise BundleError(f"{folder}: bundle version {manifest.get('bundle_version')} / "
                              f"structure {manifest.get('kind')} is not one this reader decodes")
        blobs = {}
        for name in FILES:
            try:
                blobs[name] = (folder / name).read_bytes()
            except OSError as e:
                raise BundleError(f"{folder}: {name} is missing ({e})") from None
            if hashlib.sha256(blobs[name]).hexdigest() != manifest.get("sha256", {}).get(name):
                raise BundleError(f"{folder}: {name} does not match its checksum (damaged cache)")
        self.folder = folder
        self.arch = str(manifest["arch"])
        self.digest = str(manifest["digest"])
        self.config = dict(manifest["config"])
        self.variable_rate = bool(manifest["variable_rate"])
        self.levels = int(manifest.get("levels") or 0)
        self.quality = manifest["quality"]
        self.kind = "joint"
        self.factor = int(manifest["factor"])
        self.group = int(manifest["group"])
        self.batch_size = int(batch_size)
        self.M = int(manifest["M"])
        self.k = int(manifest["kernel"])
        with np.load(io.BytesIO(blobs["entropy.npz"]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        self.h_s = _Net(manifest["h_s"], arrays, "h_s")
        self.ep = _Net(manifest["entropy_parameters"], arrays, "ep")
        self.ctx = {"weight": arrays["ctx.matrix"], "bias": arrays.get("ctx.bias"),
                    "taps": arrays["ctx.taps"].astype(np.int64), "name": "MaskedConv2d",
                    "row_sum": float(manifest["ctx_row_sum"]),
                    "bias_max": float(manifest["ctx_bias_max"])}
        self.table = CdfTable(arrays["gc.cdf"], arrays["gc.cdf_length"], arrays["gc.offset"])
        self.scale_table = arrays["gc.scale_table"].astype(np.float64)  # without its last entry
        self.scale_bound = float(arrays["gc.scale_bound"].reshape(-1)[0])
        self.eb_cdf = arrays["eb.cdf"].tolist()
        self.eb_lengths = [int(n) for n in arrays["eb.cdf_length"].reshape(-1)]
        self.eb_offsets = [int(n) for n in arrays["eb.offset"].reshape(-1)]
        self.z_medians = arrays["eb.medians"].astype(np.float64).reshape(-1)
        self.inverse_gain = arrays.get("log_inverse_gain")
        self._graph = blobs["g_s.onnx"]
        self._threads = threads
        self._session = None

    def __repr__(self) -> str:
        return (f"NumpyDecoder(arch={self.arch!r}, digest={self.digest[:12]}, "
                f"precision={self.precision}, bundle={str(self.folder)!r})")

    # -- TileDecoder's hooks ----------------------------------------------------------------
    def _check_level(self, level: float) -> None:
        check_level(level, self.levels)

    def _entropy_decode(self, streams: list[list[bytes]], y_size: tuple[int, int], order: str,
                        canonical: bool) -> np.ndarray:
        h, w = y_size
        z_hat = self._z_hat([s[0] for s in streams], (h // 4, w // 4))
        params = self.h_s(z_hat)
        y_strings = [padded(s[1], self.M * h * w) for s in streams]
        y_hat, again = self._joint(params, y_strings, order)
        bad = [t for t, (s, a) in enumerate(zip(streams, again)) if canonical and a != s[1]]
        if bad:
            raise NonCanonicalStream(bad)
        return y_hat

    def _synthesize_batch(self, y_hat: np.ndarray, headers: Sequence[TileHeader]) -> np.ndarray:
        x = np.asarray(y_hat).astype(np.float32)
        if self.variable_rate:
            x = x * gains(self.inverse_gain, [h.rate for h in headers])
        out = self._run(np.ascontiguousarray(x, dtype=np.float32))
        return np.clip(out, np.float32(0), np.float32(1)).astype(np.float64)

    # -- internals ---------------------------------------------------------------------------
    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._session is None:
            import onnxruntime as rt

            so = rt.SessionOptions()
            threads = self._threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
            so.intra_op_num_threads = max(0, threads)
            so.inter_op_num_threads = 1
            so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._session = rt.InferenceSession(self._graph, so, providers=["CPUExecutionProvider"])
        return self._session.run(None, {"x": x})[0]

    def __getstate__(self) -> dict:  # sent to another process: it opens its own session
        return {**self.__dict__, "_session": None}

    def _z_hat(self, strings: list[bytes], size: tuple[int, int]) -> np.ndarray:
        """The hyper latent: CompressAI's ``EntropyBottleneck.decompress`` with float64 medians."""
        c = len(self.eb_lengths)
        n = c * size[0] * size[1]
        indexes = np.broadcast_to(np.arange(c, dtype=np.int32)[:, None, None],
                                  (c, *size)).reshape(-1).tolist()
        decoder = ans().RansDecoder()
        out = np.empty((len(strings), c, *size), dtype=np.float64)
        for i, s in enumerate(strings):
            values = decoder.decode_with_indexes(padded(s, n), indexes, self.eb_cdf,
                                                 self.eb_lengths, self.eb_offsets)
            out[i] = np.asarray(values, dtype=np.int32).reshape(c, *size)
        return to_grid(out + self.z_medians[None, :, None, None])

    def _indexes(self, scales: np.ndarray) -> np.ndarray:
        """The CDF row of each scale: the first table scale >= the bounded scale."""
        scales = np.maximum(scales, self.scale_bound)
        return np.searchsorted(self.scale_table, scales.reshape(-1), side="left").reshape(scales.shape)

    def _context_rows(self, cols: np.ndarray) -> np.ndarray:
        ctx = self.ctx
        next_bound(float(np.abs(cols).max()) if cols.size else 0.0, ctx["row_sum"],
                   ctx["bias_max"], ctx["name"])
        out = cols @ ctx["weight"]
        if ctx["bias"] is not None:
            out = out + ctx["bias"]
        return to_grid(out)

    def _joint(self, params: np.ndarray, strings: list[bytes], order: str
               ) -> tuple[np.ndarray, list[bytes]]:
        """The autoregressive decode of :meth:`geocompress.codec.entropy.LatentCoder._joint_loop`:
        the latents, and what an encoder writes for the symbols decoded (the canonical check)."""
        b, _, h, w = params.shape
        c, k = self.M, self.k
        p = k // 2
        wp = w + 2 * p
        y_hat = np.zeros((b, (h + 2 * p) * wp, c), dtype=np.float64)
        hyper = params.transpose(0, 2, 3, 1).reshape(b, h * w, -1)
        taps = self.ctx["taps"]
        offsets = (taps // k) * wp + taps % k
        symbols = np.empty((b, h * w * c), dtype=np.int64)
        indexes = np.empty((b, h * w * c), dtype=np.int64)
        decoders = []
        for s in strings:
            d = ans().RansDecoder()
            d.set_stream(s)
            decoders.append(d)
        done = 0
        for rows, cols in schedule(h, w, k, order):
            n = len(rows)
            rows_a, cols_a = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
            window = (rows_a * wp + cols_a)[:, None] + offsets[None, :]
            ctx = self._context_rows(y_hat[:, window].reshape(b * n, -1))
            pos = rows_a * w + cols_a
            gp = self.ep.rows(np.concatenate((hyper[:, pos].reshape(b * n, -1), ctx), axis=1))
            scales, means = gp[:, :c], gp[:, c:]
            idx = self._indexes(scales).reshape(b, n * c)
            out = np.empty((b, n * c), dtype=np.float64)
            for t in range(b):
                sub, cdfs, lens, offs = self.table.subset(idx[t])
                out[t] = decoders[t].decode_stream(sub, cdfs, lens, offs)
            symbols[:, done:done + n * c] = out.astype(np.int64)
            indexes[:, done:done + n * c] = idx
            y_hat[:, (rows_a + p) * wp + cols_a + p] = out.reshape(b, n, c) + means.reshape(b, n, c)
            done += n * c
        y_hat = np.ascontiguousarray(
            y_hat.reshape(b, h + 2 * p, wp, c)[:, p:p + h, p:p + w].transpose(0, 3, 1, 2))
        again = []
        for t in range(b):
            sub, cdfs, lens, offs = self.table.subset(indexes[t])
            again.append(ans().RansEncoder().encode_with_indexes(symbols[t].tolist(), sub, cdfs,
                                                                 lens, offs))
        return y_hat, again


def load(digest: str, batch_size: int = 8, config: dict | None = None) -> NumpyDecoder | None:
    """The decoder of the weights with ``digest``, where its bundle is cached, intact and for them.

    Args:
        digest: the weights' full hex digest.
        batch_size: tiles per synthesis batch.
        config: the architecture's configuration the strings were written with (a store's
            ``model`` record), if known: the digest covers the weights' tensors only, so a bundle
            of another configuration (attention heads, ...) is not used for them.

    Returns:
        The decoder, or None (no ONNX Runtime, no bundle, or a bundle that fails its checks).
    """
    if not runtime_available():
        return None
    folder = bundle_dir(digest)
    if not (folder / MANIFEST).is_file():
        return None
    try:
        decoder = NumpyDecoder(folder, batch_size=batch_size)
    except (BundleError, KeyError, ValueError, OSError):
        return None
    if decoder.digest != digest:
        return None
    wanted = json.loads(json.dumps(config or {}, sort_keys=True))  # as the manifest holds it
    if any(decoder.config.get(k) != v for k, v in wanted.items()):
        return None
    return decoder
