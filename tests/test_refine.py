"""Encoder-side latent refinement: a better latent for the same decoder, nothing else changed."""

import copy

import numpy as np
import pytest
import torch

from geocompress.codec import CodecError, TileCodec, untrained
from geocompress.codec.refine import codec_objective, refine_latents

from .conftest import SMALL, natural_tile

LAMBDA = 0.01


def _objective(model, x, y):
    with torch.no_grad():
        bits, sse, _ = codec_objective(model, y, x)
    px = x.shape[-2] * x.shape[-1]
    return bits / px + LAMBDA * 255 ** 2 * sse / (px * x.shape[1])


@pytest.mark.parametrize("arch", ["mbt2018", "bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"])
def test_refinement_lowers_the_codecs_own_objective_of_every_tile(arch, small_codecs):
    model = copy.deepcopy(small_codecs(arch).model).float()
    x = torch.from_numpy(np.stack([natural_tile(64, 64, seed=s) for s in (1, 2)]) / 255.0).float()
    flags = [p.requires_grad for p in model.parameters()]
    with torch.no_grad():
        y0 = model.g_a(x)
    y = refine_latents(model, x, y0, LAMBDA, steps=20, lr=0.1)
    before, after = _objective(model, x, y0), _objective(model, x, y)
    assert (after < before).all(), (before, after)
    assert [p.requires_grad for p in model.parameters()] == flags  # the model is left as it was


def test_a_tile_refines_to_the_same_latent_alone_or_in_a_batch(small_codecs):
    model = copy.deepcopy(small_codecs("mgssnet").model).double()
    x = torch.from_numpy(np.stack([natural_tile(64, 64, seed=s) for s in (3, 4, 5)]) / 255.0)
    with torch.no_grad():
        y0 = model.g_a(x)
    together = refine_latents(model, x, y0, LAMBDA, steps=6, lr=0.1)
    alone = refine_latents(model, x[1:2], y0[1:2], LAMBDA, steps=6, lr=0.1)
    torch.testing.assert_close(together[1:2], alone, rtol=0, atol=1e-9)


def test_refined_strings_decode_with_a_plain_codec_of_the_same_weights(small_codecs):
    plain = small_codecs("mgssnet")
    refining = TileCodec(copy.deepcopy(plain.model).float(), refine_steps=8, refine_lambda=LAMBDA,
                         refine_lr=0.1)
    tiles = [natural_tile(50, 70, seed=6),                                   # odd size: padded
             natural_tile(64, 64, c=1, dtype=np.uint16, seed=7)]             # 1 band, uint16
    strings, recon = refining.encode_with_reconstruction(tiles, bits=None)
    decoded = plain.decode(strings)
    for t, d, r in zip(tiles, decoded, recon):
        assert d.shape == t.shape and d.dtype == t.dtype
        np.testing.assert_array_equal(d, r)
    assert TileCodec.header(strings[0]).quality == plain.quality


def test_refinement_needs_the_weights_lambda():
    model = untrained("mgssnet", **SMALL["mgssnet"])
    with pytest.raises(CodecError, match="lambda"):
        TileCodec(model, refine_steps=4)
    with pytest.raises(ValueError):
        TileCodec(model, refine_steps=-1)
    assert TileCodec(model, refine_steps=0).refine_steps == 0  # off needs nothing
