"""A codec's decoder bundle: what :class:`~geocompress.codec.numpy_decoder.NumpyDecoder` needs to
decode its strings without torch, written from the PyTorch codec into the cache.

The bundle holds the exact networks' gridded weights (hyper decoder, context model, entropy
parameters), the CDF tables, the scale table and bound, the hyper latent's float64 medians and a
variable-rate model's inverse log-gains (``entropy.npz``), and the synthesis' float32 ONNX graph
(``g_s.onnx``, the graph the ``float32-onnx`` mode runs); the manifest names the weights (digest,
architecture, configuration, quality) and checksums both files and itself. It is written to a temporary
folder and renamed into place, so a reader sees a whole bundle or none.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .numpy_decoder import BUNDLE_VERSION, FILES, MANIFEST, bundle_dir, manifest_digest
from .precision import OnnxTransform, float32_copy


class NoBundle(ValueError):
    """The codec's model has a layer or structure the NumPy decoder does not evaluate."""


def _layers(net, arrays: dict[str, np.ndarray], name: str, rows: bool = False) -> list[dict]:
    """An :class:`~geocompress.codec.exact.ExactNet`'s layers as the bundle lists them."""
    out = []
    for i, layer in enumerate(net.layers):
        m = layer.module
        spec: dict = {"name": type(m).__name__}
        if isinstance(m, nn.Conv2d) and not isinstance(m, nn.ConvTranspose2d):
            if m.groups != 1 or tuple(m.dilation) != (1, 1) or isinstance(m.padding, str):
                raise NoBundle(f"{name}: {m} (grouped, dilated or named padding)")
            if layer.pointwise:
                spec["kind"] = "pointwise"
                arrays[f"{name}.{i}.weight"] = layer.matrix.cpu().numpy()
            elif rows:
                raise NoBundle(f"{name}: {m} is not 1x1")
            else:
                spec.update(kind="conv", stride=list(m.stride), padding=list(m.padding))
                arrays[f"{name}.{i}.weight"] = layer.weight.cpu().numpy()
            if layer.bias is not None:
                arrays[f"{name}.{i}.bias"] = layer.bias.cpu().numpy()
        elif isinstance(m, nn.LeakyReLU):
            spec.update(kind="leaky", slope=float(m.negative_slope))
        elif isinstance(m, nn.ReLU):
            spec["kind"] = "relu"
        elif isinstance(m, nn.PixelShuffle):
            spec.update(kind="shuffle", factor=int(m.upscale_factor))
        elif isinstance(m, nn.Identity):
            spec["kind"] = "identity"
        else:
            raise NoBundle(f"{name}: no NumPy evaluation for {type(m).__name__}")
        out.append(spec)
    return out


def _checked_graph(g_s: nn.Module, channels: int) -> bytes:
    """The synthesis' ONNX graph (the cached one, else exported again), checked against PyTorch's
    float32 layers on a small latent before a bundle trusts it.

    Raises:
        NoBundle: even a fresh export does not compute the layers (a model ONNX Runtime cannot
            run as exported).
    """
    import onnxruntime as rt

    runner = OnnxTransform(g_s)
    x = torch.randn(1, channels, 3, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = float32_copy(runner.layers)(x).numpy()
    for fresh in (False, True):
        graph = runner.graph(fresh=fresh)
        try:
            got = rt.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(
                None, {"x": x.numpy()})[0]
        except Exception:  # noqa: BLE001 - any graph ONNX Runtime cannot run is not used
            continue
        scale = max(1.0, float(np.abs(want).max()))  # an untrained or odd input's output can be large
        if got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-4 * scale:
            return graph
    raise NoBundle("the synthesis' ONNX graph does not reproduce its PyTorch layers")


def bundle_files(codec) -> tuple[dict, dict[str, bytes]]:
    """The manifest and files of ``codec``'s bundle.

    Args:
        codec: a :class:`~geocompress.codec.tile_codec.TileCodec` (any precision or device).

    Returns:
        ``(manifest, {file name: bytes})``.

    Raises:
        NoBundle: a model the NumPy decoder cannot decode (not the joint structure, or a layer it
            does not evaluate).
    """
    coder, model = codec.coder, codec.model
    if coder.kind != "joint":
        raise NoBundle(f"{codec.arch} has the {coder.kind} structure; the NumPy decoder decodes "
                       f"joint models")
    arrays: dict[str, np.ndarray] = {}
    h_s = _layers(coder.h_s, arrays, "h_s")
    ep = _layers(coder.ep, arrays, "ep", rows=True)
    arrays["ctx.matrix"] = coder.ctx_matrix.cpu().numpy()
    if coder.ctx.bias is not None:
        arrays["ctx.bias"] = coder.ctx.bias.cpu().numpy()
    arrays["ctx.taps"] = coder.ctx.taps.cpu().numpy().astype(np.int64)
    cdf, lengths, offsets = (t.cpu().numpy() for t in (coder.gc.quantized_cdf, coder.gc.cdf_length,
                                                       coder.gc.offset))
    arrays.update({"gc.cdf": cdf, "gc.cdf_length": lengths, "gc.offset": offsets})
    arrays["gc.scale_table"] = coder.gc.scale_table[:-1].detach().to(torch.float64).cpu().numpy()
    arrays["gc.scale_bound"] = (coder.gc.lower_bound_scale.bound.detach().to(torch.float64)
                                .cpu().numpy().reshape(-1)[:1])
    eb = model.entropy_bottleneck
    arrays.update({"eb.cdf": eb.quantized_cdf.cpu().numpy(),
                   "eb.cdf_length": eb.cdf_length.cpu().numpy(),
                   "eb.offset": eb.offset.cpu().numpy(),
                   "eb.medians": coder.z_medians.cpu().numpy().reshape(-1)})
    if codec.variable_rate:
        arrays["log_inverse_gain"] = model.log_inverse_gain.detach().float().cpu().numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    files = {"entropy.npz": buf.getvalue(), "g_s.onnx": _checked_graph(model.g_s, int(model.M))}
    manifest = {
        "bundle_version": BUNDLE_VERSION, "arch": codec.arch, "digest": codec.digest,
        "quality": 0 if codec.variable_rate else codec.quality, "config": codec.config,
        "variable_rate": codec.variable_rate,
        "levels": int(model.levels) if codec.variable_rate else None,
        "kind": "joint", "M": int(model.M), "kernel": int(coder.k),
        "factor": codec.factor, "group": codec.group, "h_s": h_s, "entropy_parameters": ep,
        "ctx_row_sum": coder.ctx.row_sum, "ctx_bias_max": coder.ctx.bias_max,
        "torch": torch.__version__,
        "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    manifest = json.loads(json.dumps(manifest, sort_keys=True))  # as a reader will see it
    manifest["manifest_sha256"] = manifest_digest(manifest)
    assert set(files) == set(FILES)
    return manifest, files


def write_bundle(codec) -> Path:
    """Write ``codec``'s bundle into the cache, unless an intact one is there.

    Args:
        codec: a :class:`~geocompress.codec.tile_codec.TileCodec`.

    Returns:
        The bundle's folder.

    Raises:
        NoBundle: see :func:`bundle_files`.
        OSError: the cache cannot be written.
    """
    from .numpy_decoder import load

    folder = bundle_dir(codec.digest)
    if load(codec.digest, config=codec.config) is not None:
        return folder
    manifest, files = bundle_files(codec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if load(codec.digest, config=codec.config) is not None:  # another process wrote it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        return folder
    if folder.exists():  # a damaged or outdated bundle: replaced
        shutil.rmtree(folder, ignore_errors=True)
    try:
        tmp.rename(folder)
    except OSError:  # another process put one there first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
