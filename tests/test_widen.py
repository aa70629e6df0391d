"""Widening a trained trunk keeps what it computes (the warm start of a wider variable-rate run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geocompress.codec.weights import save_checkpoint, untrained
from geocompress.training.widen import widen_transforms

from .conftest import natural_tile


def _busy(arch: str) -> torch.nn.Module:
    """A small model whose every weight is non-trivial (the attention blocks start as the identity
    in a fresh model, which would hide a widening that breaks them)."""
    torch.manual_seed(0)
    m = untrained(arch, N=16, M=24)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith(("g_a.", "g_s.")) and "reparam" not in name:
                p.add_(0.05 * torch.randn_like(p))
    return m.eval()


@pytest.mark.parametrize("arch, width", [("mgssnet", 24), ("mgssnet-vr", 32)])
def test_the_wider_transforms_compute_the_same_latent_and_image(arch, width):
    narrow = _busy(arch)
    wide = widen_transforms(narrow, width)
    assert wide.config["transform_N"] == width and wide.config["N"] == narrow.config["N"]
    assert wide.g_a[0].weight.shape[0] == width and wide.h_a[0].weight.shape[0] == 16
    x = torch.rand(2, 3, 64, 64)
    for level in ([0.0, 3.5, 8.0] if arch == "mgssnet-vr" else [None]):
        if level is not None:
            narrow.set_rate(level)
            wide.set_rate(level)
        with torch.no_grad():
            y, y2 = narrow.g_a(x), wide.g_a(x)
            np.testing.assert_allclose(y2.numpy(), y.numpy(), atol=1e-5 * float(y.abs().max()))
            x_hat, x_hat2 = narrow.g_s(y.round()), wide.g_s(y.round())
            np.testing.assert_allclose(x_hat2.numpy(), x_hat.numpy(), atol=1e-5)


def test_the_new_channels_learn():
    """Every weight from a new channel into an old one starts at zero; a gradient step moves it."""
    wide = widen_transforms(_busy("mgssnet"), 24).train()
    x = torch.rand(1, 3, 64, 64)
    loss = (wide.g_s(wide.g_a(x)) - x).pow(2).mean()
    loss.backward()
    w = wide.g_a[2].weight  # the stride-1 conv of stage 1: old outputs (0..15), new inputs (16..)
    assert float(w[:16, 16:].abs().max()) == 0.0
    assert float(w.grad[:16, 16:].abs().max()) > 0.0


def test_a_narrower_or_indivisible_width_is_refused():
    m = _busy("mgssnet")
    with pytest.raises(ValueError, match="divisible"):
        widen_transforms(m, 18)
    with pytest.raises(ValueError, match=">= 16"):
        widen_transforms(m, 8)


def test_a_widened_checkpoint_codes_and_decodes(tmp_path):
    import geocompress

    path = tmp_path / "wide.pt"
    save_checkpoint(widen_transforms(_busy("mgssnet-vr"), 32), path)
    codec = geocompress.load_codec(checkpoint=str(path), quality=2.0, precision="float32")
    tile = natural_tile(64, 64)
    out = codec.decode(codec.encode([tile]))[0]
    assert out.shape == tile.shape and codec.config["transform_N"] == 32
