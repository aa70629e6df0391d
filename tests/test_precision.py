"""Precision modes and the wavefront coding order: fast transforms never change what decodes."""

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
    assert resolve_precision("auto", "cpu") in ("bfloat16", "float32")
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
