"""Training quantization: "mixed" trains every structure on what the real decoder rebuilds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from geocompress.training.loss import rate_bpp
from geocompress.training.quantization import forward
from tests.conftest import SMALL, natural_tile


@pytest.mark.parametrize("arch", ["mgssnet", "bmshj2018-factorized", "bmshj2018-hyperprior",
                                  "mbt2018-mean", "bmshj2018-factorized-lgcm"])
def test_mixed_forward_trains_every_structure(arch: str) -> None:
    from geocompress.codec.weights import untrained

    model = untrained(arch, **SMALL[arch]).train()
    x = torch.from_numpy(natural_tile(64, 64).astype(np.float32) / 255)[None]
    ref = model(x)
    out = forward(model, x, "mixed")
    assert out["x_hat"].shape == x.shape and set(out["likelihoods"]) == set(ref["likelihoods"])
    loss = rate_bpp(out["likelihoods"], 64 * 64) + 100 * torch.mean((out["x_hat"] - x) ** 2)
    loss.backward()
    g = model.g_a[0].weight.grad  # the straight-through gradient reaches the analysis transform
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown quantization"):
        forward(model, x, "ste")


def test_mixed_eval_decodes_like_the_codec_for_a_mean_scale_model() -> None:
    """Without a context model the decoder's latent is exact: x_hat is the codec's reconstruction."""
    from geocompress.codec.tile_codec import TileCodec
    from geocompress.codec.weights import untrained

    model = untrained("mbt2018-mean", **SMALL["mbt2018-mean"]).eval()
    tile = natural_tile(64, 64)
    with torch.no_grad():
        x_hat = forward(model, torch.from_numpy(tile.astype(np.float32) / 255)[None], "mixed")["x_hat"]
    mine = np.clip(np.rint(x_hat[0].numpy() * 255), 0, 255)
    _, recon = TileCodec(model).encode_with_reconstruction(tile[None])
    assert np.abs(mine - recon[0]).max() <= 1  # float32 here vs the codec's float64


def test_fixed_point_approximates_the_sequential_decoders_latent(shared_data: Path) -> None:
    """What ``mixed`` shows g_s and the context model is close to what the real decoder rebuilds
    (the shipped q1 on a real UC Merced crop), far closer than ``forward``'s ``round(y)``."""
    import rasterio

    import geocompress
    from geocompress.codec.entropy import LatentCoder
    from geocompress.codec.weights import shipped_index
    from geocompress.training.quantization import decoder_latent

    if not shipped_index().get("mgssnet"):
        pytest.skip("no shipped MGSSNet weights in this checkout")
    with rasterio.open(shared_data / "tiles" / "ucmerced" / "agricultural" / "agricultural12.png") as src:
        tile = src.read(window=((0, 128), (0, 128)))[:3]
    model = geocompress.load_codec("mgssnet", quality=1, precision="float64").model.eval()
    x = torch.from_numpy(tile.astype(np.float64) / 255)[None]
    with torch.no_grad():
        y = model.g_a(x)
        z_hat, _ = model.entropy_bottleneck(model.h_a(y))
        decoded = LatentCoder(model).encode(y)[1]  # the sequential coder's y_hat, bit for bit the decoder's
        approx = decoder_latent(model, y, model.h_s(z_hat))
    assert (approx - decoded).abs().mean() < 0.6 * (torch.round(y) - decoded).abs().mean()
