"""Precision modes and the wavefront coding order: fast transforms never change what decodes."""

import pickle
import warnings
from itertools import product

import numpy as np
import pytest
import rasterio
import torch

import geocompress
from geocompress.codec.entropy import RASTER, WAVEFRONT, schedule
from geocompress.codec.format import FORMAT_VERSION
from geocompress.codec.precision import resolve_precision
from geocompress.codec.weights import shipped_index
from geocompress.scene import OutputSpec, compress_scene, decompress_scene
from geocompress.store import TileStore

from .conftest import REPO, natural_tile
from .test_scene import TINY, write_scene

CPU_MODES = ("bfloat16", "float32", "float64")
FIXTURE = REPO / "tests" / "data" / "format1_mgssnet_q1.npz"


def _shipped(precision: str):
    if not shipped_index().get("mgssnet"):
        pytest.skip("no shipped MGSSNet weights in this checkout")
    return geocompress.load_codec("mgssnet", quality=1, precision=precision)


@pytest.fixture(scope="module")
def shipped_codecs():
    return {p: _shipped(p) for p in CPU_MODES}


@pytest.fixture(scope="module")
def tiles():
    return [natural_tile(64, 64, seed=11), natural_tile(64, 128, seed=12)]


@pytest.mark.parametrize("enc, dec", list(product(CPU_MODES, CPU_MODES)))
def test_strings_of_any_precision_decode_to_the_same_latent_in_any_other(enc, dec, shipped_codecs,
                                                                         tiles):
    """The entropy path is exact: the decoder rebuilds the encoder's latent bit for bit whatever
    the two precisions; only the synthesis of pixels from it follows the decoder's mode."""
    e, d = shipped_codecs[enc], shipped_codecs[dec]
    x = torch.from_numpy(np.stack([tiles[0]]).astype(np.float64) / 255)
    y = e.transforms(e.model.g_a, x)
    streams, y_hat = e.coder.encode(y)
    assert torch.equal(d.coder.decode(streams, y.shape[-2:]), y_hat)
    # and through the public API: the pixels are the decoder's own synthesis of that latent
    strings, recon = e.encode_with_reconstruction(tiles)
    out = d.decode(strings)
    exact = shipped_codecs["float64"].decode(strings)
    for o, r, ex in zip(out, recon, exact):
        if enc == dec:
            np.testing.assert_array_equal(o, r)
        assert np.abs(o.astype(int) - ex).max() <= 3  # precision noise, never a wrong symbol


def test_hyper_latent_dequantizes_identically_in_every_precision(shipped_codecs, tiles):
    x = torch.from_numpy(np.stack([tiles[0]]).astype(np.float64) / 255)
    c32 = shipped_codecs["float32"]
    strings, _ = c32.coder._z(c32.transforms(c32.model.g_a, x))
    z = [c.coder._z_hat(strings, (1, 1)) for c in shipped_codecs.values()]
    assert all(t.dtype == torch.float64 and torch.equal(t, z[0]) for t in z)


def test_format_1_strings_still_decode_to_the_pixels_they_did():
    """Strings written before the wavefront order (format 1, raster order) and the pixels the
    float64 decoder gave for them then."""
    _shipped("float64")
    ref = np.load(FIXTURE)
    codec = geocompress.load_codec("mgssnet", quality=1, precision="float64")
    strings = [ref["string3"].tobytes(), ref["string4"].tobytes()]
    assert [codec.header(s).version for s in strings] == [1, 1]
    out = codec.decode(strings)
    np.testing.assert_array_equal(out[0], ref["tile3"])
    np.testing.assert_array_equal(out[1], ref["tile4"])
    assert codec.header(codec.encode([ref["source3"]])[0]).version == FORMAT_VERSION


@pytest.mark.parametrize("arch", ["mbt2018", "mgssnet"])
def test_wavefront_and_raster_orders_code_the_same_symbols(arch, small_codecs):
    codec = small_codecs(arch, precision="float64")
    x = torch.from_numpy(np.stack([natural_tile(64, 128, seed=5)]).astype(np.float64) / 255)
    y = codec.model.g_a(x)
    raster, y_raster = codec.coder.encode(y, order=RASTER)
    wave, y_wave = codec.coder.encode(y, order=WAVEFRONT)
    assert torch.equal(y_raster, y_wave)
    assert raster[0][0] == wave[0][0]  # the hyper latent is not autoregressive
    assert abs(len(raster[0][1]) - len(wave[0][1])) <= 8  # same symbols, same rate
    assert torch.equal(codec.coder.decode(wave, y.shape[-2:], order=WAVEFRONT), y_wave)
    assert torch.equal(codec.coder.decode(raster, y.shape[-2:], order=RASTER), y_raster)


@pytest.mark.parametrize("h, w", [(16, 16), (1, 7), (5, 3), (4, 9)])
def test_wavefront_groups_depend_only_on_earlier_groups(h, w):
    k = 5
    mask = np.ones((k, k), bool)
    mask[k // 2, k // 2:] = False
    mask[k // 2 + 1:] = False  # compressai's type-A mask: rows above, and left on the same row
    group_of = {}
    for g, (rows, cols) in enumerate(schedule(h, w, k, WAVEFRONT)):
        for i, j in zip(rows, cols):
            group_of[(i, j)] = g
    assert len(group_of) == h * w
    for (i, j), g in group_of.items():
        for di, dj in zip(*np.nonzero(mask)):
            n = (i + di - k // 2, j + dj - k // 2)
            if n in group_of:
                assert group_of[n] < g, (i, j, n)
    assert len(schedule(16, 16, 5, WAVEFRONT)) == 61


def test_precision_names():
    assert resolve_precision("auto", "cpu") in ("bfloat16", "float32", "float32-onnx")
    assert resolve_precision("float64", "cpu") == "float64"
    with pytest.raises(ValueError, match="CUDA only"):
        resolve_precision("float16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        geocompress.load_codec("mbt2018", pretrained=False, N=16, M=24, precision="half")


def test_a_store_is_not_tied_to_the_precision_that_wrote_it(tmp_path):
    src = write_scene(tmp_path / "s.tif", natural_tile(128, 128, seed=4))
    store = tmp_path / "s.zarr"
    compress_scene(src, store, **TINY, precision="bfloat16")
    assert "precision" not in TileStore.open(store).codec_meta["config"]
    compress_scene(src, store, **TINY, precision="float64")  # resumes: nothing pending, no refusal
    outs = {}
    for p in ("bfloat16", "float64"):
        outs[p] = decompress_scene(store, tmp_path / f"{p}.tif", precision=p, processes=False,
                                   progress=False, output=OutputSpec(cog=False))
    with rasterio.open(outs["bfloat16"]) as a, rasterio.open(outs["float64"]) as b:
        assert np.abs(a.read().astype(int) - b.read()).max() <= 3


@pytest.mark.parametrize("forced, klass, auto", [("avx2", "AVX2", "float32"),
                                                  ("avx512", "AVX-512", "float32"),
                                                  ("avx512-bf16", "AVX-512", "bfloat16"),
                                                  ("amx", "AMX", "bfloat16")])
def test_cpu_class_override_makes_auto_resolve_as_on_that_cpu(forced, klass, auto, monkeypatch):
    """GEOCOMPRESS_CPU_CLASS (benchmarks/cpu_speed.py --emulate-avx2) picks the class that 'auto'
    and the benchmarks see; without it the CPU's own flags decide."""
    from geocompress.codec import precision as prec

    monkeypatch.setenv("GEOCOMPRESS_CPU_CLASS", forced)
    monkeypatch.setenv("GEOCOMPRESS_ONNX", "0")  # float32 in PyTorch (ONNX Runtime: below)
    prec._cpu_kind.cache_clear()
    try:
        assert prec.cpu_class() == klass
        assert resolve_precision("auto", "cpu") == auto
        monkeypatch.setenv("GEOCOMPRESS_CPU_CLASS", "pentium")
        prec._cpu_kind.cache_clear()
        with pytest.raises(ValueError, match="GEOCOMPRESS_CPU_CLASS"):
            prec.cpu_class()
    finally:
        monkeypatch.delenv("GEOCOMPRESS_CPU_CLASS")
        prec._cpu_kind.cache_clear()
    assert prec.cpu_class() in ("AMX", "AVX-512", "AVX2", "other")


def _needs_onnx():
    from geocompress.codec.precision import onnx_available

    if not onnx_available(ignore_env=True):
        pytest.skip("ONNX Runtime not installed (pip install geocompress[onnx])")


def test_onnx_transforms_match_float32_and_strings_cross_decode(shipped_codecs, tiles, tmp_path,
                                                                monkeypatch):
    """float32-onnx ('auto' on CPUs without bf16 where ONNX Runtime is installed): g_a / g_s
    through ONNX Runtime give float32's latents and pixels within float32 noise, at any tile size
    (dynamic shapes), and strings of either mode decode in the other, and in float64, to the same
    latent."""
    _needs_onnx()
    monkeypatch.setenv("GEOCOMPRESS_CACHE", str(tmp_path))
    onnx = _shipped("float32-onnx")
    assert onnx.precision == "float32-onnx"
    f32, f64 = shipped_codecs["float32"], shipped_codecs["float64"]
    odd = tiles + [natural_tile(200, 130, seed=13)]  # padded to 256 x 192
    s_onnx, s_f32 = onnx.encode(odd), f32.encode(odd)
    x = torch.from_numpy(np.stack([tiles[0]]).astype(np.float64) / 255)
    y_onnx, y_f32 = onnx.transforms(onnx.model.g_a, x), f32.transforms(f32.model.g_a, x)
    assert (y_onnx - y_f32).abs().max() < 1e-3 * y_f32.abs().max()
    for strings in (s_onnx, s_f32):
        lat = [c.decode_latents(strings)[1] for c in (onnx, f32, f64)]
        for a, b, c in zip(*lat):
            assert all(torch.equal(u, v) and torch.equal(u, w) for u, v, w in zip(a, b, c))
        for o, r in zip(onnx.decode(strings), f32.decode(strings)):
            assert np.abs(o.astype(int) - r).max() <= 2
    assert sorted(p.suffix for p in (tmp_path / "onnx").iterdir()) == [".onnx", ".onnx"]
    # a second codec loads the cached graphs (no export) and decodes the same pixels
    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    sent = pickle.loads(pickle.dumps(onnx))  # as to a worker process: its own sessions
    assert [r.module for r in sent.transforms.onnx] == [sent.model.g_a, sent.model.g_s]
    again = _shipped("float32-onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to PyTorch warns
        for a, b in zip(again.decode(s_onnx), onnx.decode(s_onnx)):
            np.testing.assert_array_equal(a, b)


def test_onnx_keeps_a_variable_rate_models_gains_in_torch():
    """The gain of mgssnet-vr changes with the level: only the layers are exported, so every
    level's synthesis matches float32's."""
    _needs_onnx()
    from .test_variable_rate import _spread_model
    from geocompress.codec.tile_codec import TileCodec

    tile = natural_tile(64, 64, seed=5)
    for level in (0.5, 6.0):
        a = TileCodec(_spread_model(), quality=level, precision="float32-onnx")
        b = TileCodec(_spread_model(), quality=level, precision="float32")
        strings = b.encode([tile])
        np.testing.assert_allclose(a.decode(strings)[0].astype(int), b.decode(strings)[0], atol=2)


def test_auto_picks_onnx_only_without_bf16_and_where_installed(monkeypatch):
    from geocompress.codec import precision as prec

    for forced, onnx_env, expected in (("avx2", "1", "float32-onnx"), ("avx2", "0", "float32"),
                                       ("amx", "1", "bfloat16")):
        if expected == "float32-onnx":
            try:
                _needs_onnx()
            except pytest.skip.Exception:
                expected = "float32"
        monkeypatch.setenv("GEOCOMPRESS_CPU_CLASS", forced)
        monkeypatch.setenv("GEOCOMPRESS_ONNX", onnx_env)
        prec._cpu_kind.cache_clear()
        try:
            assert resolve_precision("auto", "cpu") == expected
        finally:
            prec._cpu_kind.cache_clear()
    with pytest.raises(ValueError, match="CPU only"):
        resolve_precision("float32-onnx", "cuda")
