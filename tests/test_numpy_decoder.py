"""The torch-free reader (issue 38): NumPy + ONNX Runtime decode what the PyTorch codec writes into
the same latents (bit for bit) and the same pixels as PyTorch's ``float32-onnx`` mode; forged
strings and damaged bundles are refused; the lazy view reads a store without importing torch."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import rasterio
import torch

from geocompress.codec import CodecError, CorruptStreamError, WeightsMismatchError, load_codec
from geocompress.codec.decoder_bundle import NoBundle, write_bundle
from geocompress.codec.numpy_decoder import NumpyDecoder, bundle_dir, load
from geocompress.codec.tile_codec import TileCodec
from geocompress.scene.halo import latent_window

from .conftest import natural_tile
from .test_scene import write_scene
from .test_variable_rate import _spread_model

SMALL = {"N": 16, "M": 24}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Each test its own cache, ONNX Runtime allowed (the suite's default switches it off)."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime not installed (geocompress[onnx])")
    monkeypatch.setenv("GEOCOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GEOCOMPRESS_ONNX", "1")


def _pair(codec: TileCodec) -> NumpyDecoder:
    write_bundle(codec)
    decoder = load(codec.digest)
    assert decoder is not None
    return decoder


def _same_latents(a, b) -> None:
    assert len(a) == len(b)
    for ta, tb in zip(a, b):
        for ga, gb in zip(ta, tb):
            np.testing.assert_array_equal(ga.numpy(), gb)  # exact: not allclose


def test_fixed_rate_strings_decode_to_the_same_latents_and_pixels():
    """Odd sizes, 1 to 5 bands (two band groups), uint16 with value ranges: every tile's latent is
    PyTorch's bit for bit, and its pixels those of PyTorch's float32-onnx mode."""
    codec = load_codec("mgssnet", pretrained=False, precision="float32-onnx", **SMALL)
    decoder = _pair(codec)
    tiles = [natural_tile(96, 70, seed=1), natural_tile(64, 64, c=5, seed=2)[:, :50],
             natural_tile(64, 64, c=1, seed=3)]
    strings = [s for t in tiles for s in codec.encode([t])]
    wide = (natural_tile(64, 64, seed=4).astype(np.uint16) * 13 + 100)
    strings += codec.encode([wide], bits=12, ranges=[(100, 3500)] * 3)
    _same_latents(codec.decode_latents(strings)[1], decoder.decode_latents(strings)[1])
    for a, b, t in zip(codec.decode(strings), decoder.decode(strings), tiles + [wide]):
        assert a.dtype == b.dtype == t.dtype and a.shape == b.shape == t.shape
        np.testing.assert_array_equal(a, b)


def test_variable_rate_strings_decode_alike_at_fractional_levels():
    """The inverse gains at the header's level (interpolated between levels) are applied as the
    PyTorch ONNX path applies them: same pixels at every level, in one batch of mixed levels."""
    strings = []
    for level in (0.0, 2.5, 5.123):
        strings += TileCodec(_spread_model(), quality=level, precision="float32").encode(
            [natural_tile(64, 64, seed=7)])
    codec = TileCodec(_spread_model(), quality=1.0, precision="float32-onnx")
    decoder = _pair(codec)
    _same_latents(codec.decode_latents(strings)[1], decoder.decode_latents(strings)[1])
    for a, b in zip(codec.decode(strings), decoder.decode(strings)):
        np.testing.assert_array_equal(a, b)


def test_halo_windows_synthesize_alike():
    """A scene decoder's windows (a tile's latent with its neighbours' around it) give the same
    pixels from NumPy latents as from PyTorch's."""
    codec = load_codec("mgssnet", pretrained=False, precision="float32-onnx", **SMALL)
    decoder = _pair(codec)
    strings = codec.encode([natural_tile(64, 64, seed=s) for s in range(4)])
    heads, lt = codec.decode_latents(strings)
    _, ln = decoder.decode_latents(strings)
    cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
    sides = [(0, 1, 0, 1), (0, 1, 1, 0), (1, 0, 0, 1), (1, 0, 1, 0)]
    wt = [[latent_window({c: lt[i][0] for i, c in enumerate(cells)}, *c, 1, sd)] for c, sd in zip(cells, sides)]
    wn = [[latent_window({c: ln[i][0] for i, c in enumerate(cells)}, *c, 1, sd)] for c, sd in zip(cells, sides)]
    for a, b in zip(wt, wn):
        np.testing.assert_array_equal(a[0].numpy(), b[0])
    with torch.no_grad():
        pt = codec.synthesize(heads, wt, 1, sides=sides)
    for a, b in zip(pt, decoder.synthesize(heads, wn, 1, sides=sides)):
        np.testing.assert_array_equal(a, b)


def _recrc(s: bytes) -> bytes:
    return s[:-4] + struct.pack("<I", zlib.crc32(s[:-4]) & 0xFFFFFFFF)


def test_forged_and_foreign_strings_are_refused_alike():
    """The checks are the shared TileDecoder's: the same error, before or during decoding."""
    codec = load_codec("mgssnet", pretrained=False, precision="float32-onnx", **SMALL)
    decoder = _pair(codec)
    (good,) = codec.encode([natural_tile(64, 64, seed=9)])
    cut = _recrc(good[:-12] + good[-4:])                     # a truncated payload, CRC redone
    flipped = bytearray(good)
    flipped[-20] ^= 0x5A                                     # a changed latent byte, CRC redone
    other = load_codec("mgssnet", pretrained=False, precision="float32", N=16, M=32)
    (foreign,) = other.encode([natural_tile(64, 64, seed=9)])
    for bad, kind in ((cut, CodecError), (_recrc(bytes(flipped)), CodecError),
                      (foreign, WeightsMismatchError), (good[:-1] + b"\x00", CorruptStreamError)):
        errors = []
        for dec in (codec, decoder):
            with pytest.raises(kind) as e:
                dec.decode([bad])
            errors.append(type(e.value))
        assert errors[0] is errors[1], errors


def test_a_damaged_or_foreign_bundle_is_not_used_and_the_reader_rewrites_it():
    from geocompress.scene.workers import CodecSpec, _CACHE, get_decoder

    codec = load_codec("mgssnet", pretrained=False, precision="float32-onnx", **SMALL)
    folder = write_bundle(codec)
    onnx = folder / "g_s.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1] + b"\x01")       # one byte of the graph changed
    assert load(codec.digest) is None
    spec = CodecSpec(arch="mgssnet", digest=codec.digest, pretrained=False,
                     model_config=dict(SMALL), precision="float32-onnx")
    _CACHE.clear()
    try:
        decoder = get_decoder(spec)                          # rebuilt from the model, then used
        assert isinstance(decoder, NumpyDecoder)
        (s,) = codec.encode([natural_tile(64, 64, seed=1)])
        np.testing.assert_array_equal(decoder.decode([s])[0], codec.decode([s])[0])
        # a bundle renamed to another digest's folder names its own weights: not used for them
        other = bundle_dir("0" * 64)
        folder.rename(other)
        assert load("0" * 64) is None and load(codec.digest) is None
    finally:
        _CACHE.clear()


def test_an_edited_manifest_or_another_configuration_is_not_used():
    """The manifest steers the decoding (layer kinds, sizes, bounds): an edit that keeps the files'
    checksums is refused; and the digest covers tensors only, so a bundle of the same tensors
    under another configuration is not used for a store that names its own."""
    import json

    codec = load_codec("mgssnet", pretrained=False, precision="float32-onnx", **SMALL)
    folder = write_bundle(codec)
    good = (folder / "manifest.json").read_text()
    m = json.loads(good)
    leaky = max(k for k, layer in enumerate(m["entropy_parameters"]) if layer["kind"] == "leaky")
    m["entropy_parameters"][leaky]["kind"] = "relu"
    (folder / "manifest.json").write_text(json.dumps(m))
    assert load(codec.digest) is None
    (folder / "manifest.json").write_text(good)
    assert load(codec.digest, config=codec.config) is not None
    assert load(codec.digest, config={**codec.config, "heads": 3}) is None


def test_models_without_the_joint_structure_have_no_bundle():
    codec = load_codec("mbt2018-mean", pretrained=False, precision="float32-onnx", **SMALL)
    with pytest.raises(NoBundle, match="joint"):
        write_bundle(codec)


def test_readers_decode_without_torch_and_agree(tmp_path):
    """A reader's processes: the first read of new weights on a machine writes their bundle (torch
    imported); from then on the lazy view and `decompress` (a window, the whole scene) import no
    torch, and every reader gives the same pixels: the view's, `decompress`'s by default and
    with `--precision float32-onnx`, a halo store's seams included."""
    from geocompress.cli import main
    from geocompress.scene import compress_scene

    scene = write_scene(tmp_path / "s.tif", natural_tile(150, 130, seed=5))
    store = tmp_path / "s.zarr"
    compress_scene(scene, store, arch="mgssnet", pretrained=False, model_config=dict(SMALL),
                   processes=False, progress=False, tile=64, halo=1)
    view = ("import sys, numpy as np, xarray as xr; a = xr.open_dataset(sys.argv[1], "
            "engine='geocompress')['band_data']; np.save(sys.argv[2], a[:, 20:140, 10:120].values); "
            "print('torch' in sys.modules)")
    cli = ("import sys; from geocompress.cli import main; rc = main(sys.argv[1:]); "
           "print('torch' in sys.modules if rc == 0 else rc)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [("v0", view, [str(store), str(tmp_path / "v0.npy")]),
            ("v1", view, [str(store), str(tmp_path / "v1.npy")]),
            ("w", cli, ["--quiet", "decompress", str(store), str(tmp_path / "w.tif"), "--window",
                        "10", "20", "110", "120"]),
            ("d", cli, ["--quiet", "decompress", str(store), str(tmp_path / "d.tif")])]
    seen = {}
    for name, code, args in runs:
        out = subprocess.run([sys.executable, "-W", "ignore", "-c", code, *args],
                             capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        seen[name] = out.stdout.strip().splitlines()[-1]
    assert seen == {"v0": "True", "v1": "False", "w": "False", "d": "False"}, seen
    assert main(["--quiet", "decompress", str(store), str(tmp_path / "o.tif"), "--precision",
                 "float32-onnx"]) == 0
    with rasterio.open(tmp_path / "o.tif") as f:
        ref = f.read()
    with rasterio.open(tmp_path / "d.tif") as f:
        np.testing.assert_array_equal(f.read(), ref)
    with rasterio.open(tmp_path / "w.tif") as f:
        np.testing.assert_array_equal(f.read(), ref[:, 20:140, 10:120])
    for k in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"v{k}.npy"), ref[:, 20:140, 10:120])


def test_a_cached_graph_that_is_not_the_synthesis_is_exported_again(tmp_path):
    """A graph in the ONNX cache under the synthesis' key that does not compute it (damaged, or
    left by something else) is neither bundled nor run: the bundle's graph is checked against the
    PyTorch layers and exported afresh."""
    from geocompress.codec.precision import OnnxTransform

    codec = load_codec("mgssnet", pretrained=False, precision="float32-onnx", **SMALL)
    runner = OnnxTransform(codec.model.g_a)
    foreign = runner.graph()                                  # another network's graph
    g_s = OnnxTransform(codec.model.g_s)
    good = g_s.graph()
    cached = [p for p in (tmp_path / "cache" / "onnx").iterdir() if p.read_bytes() == good]
    assert len(cached) == 1
    cached[0].write_bytes(foreign)                            # the synthesis' cache entry swapped
    decoder = _pair(codec)
    (s,) = codec.encode([natural_tile(64, 64, seed=2)])
    np.testing.assert_array_equal(decoder.decode([s])[0], codec.decode([s])[0])
    assert cached[0].read_bytes() == good


def test_format_1_strings_of_the_shipped_weights_decode_alike():
    """Raster-order strings (format 1, written by the shipped q1-q4 before the wavefront order)
    decode to PyTorch's latents and float32-onnx pixels."""
    from .test_precision import FIXTURE, _shipped

    ref = np.load(FIXTURE)
    codec = _shipped("float32-onnx")
    decoder = _pair(codec)
    strings = [ref["string3"].tobytes(), ref["string4"].tobytes()]
    assert [decoder.header(s).version for s in strings] == [1, 1]
    _same_latents(codec.decode_latents(strings)[1], decoder.decode_latents(strings)[1])
    for a, b in zip(codec.decode(strings), decoder.decode(strings)):
        np.testing.assert_array_equal(a, b)
