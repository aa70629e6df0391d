"""Widening a trained trunk keeps what it computes (the warm start of a wider variable-rate run)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geocompress.codec.weights import save_checkpoint, untrained
from geocompress.training.trainer import val_levels
from geocompress.training.widen import add_levels_above, add_levels_below, latent_entries_added, widen_latent, widen_transforms

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


def _at_rates(arch: str, levels: list[float], *models: torch.nn.Module):
    """Each of ``levels`` set on every model (a variable-rate ``arch``), or once as they are."""
    for level in (levels if arch == "mgssnet-vr" else [None]):
        if level is not None:
            for m in models:
                m.set_rate(level)
        yield level


@pytest.mark.parametrize("arch, width", [("mgssnet", 24), ("mgssnet-vr", 32)])
def test_the_wider_transforms_compute_the_same_latent_and_image(arch, width):
    narrow = _busy(arch)
    wide = widen_transforms(narrow, width)
    assert wide.config["transform_N"] == width and wide.config["N"] == narrow.config["N"]
    assert wide.g_a[0].weight.shape[0] == width and wide.h_a[0].weight.shape[0] == 16
    x = torch.rand(2, 3, 64, 64)
    for _ in _at_rates(arch, [0.0, 3.5, 8.0], narrow, wide):
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


def _latent_pair(arch: str, M: int = 48):
    torch.manual_seed(1)
    narrow = untrained(arch, N=16, M=24)
    with torch.no_grad():
        for p in narrow.parameters():
            p.add_(0.02 * torch.randn_like(p))
    narrow.update(force=True)
    return narrow.eval(), widen_latent(narrow, M)


@pytest.mark.parametrize("arch", ["mgssnet", "mgssnet-vr"])
def test_a_wider_latent_codes_every_image_as_before(arch):
    narrow, wide = _latent_pair(arch)
    assert wide.config["M"] == 48 and wide.g_a[-1].weight.shape[0] == 48
    x = torch.rand(2, 3, 64, 64)
    for _ in _at_rates(arch, [0.0, 4.5, 8.0], narrow, wide):
        with torch.no_grad():
            a, b = narrow(x), wide(x)
            y2 = wide.g_a(x)
        assert float(y2[:, 24:].abs().max()) == 0.0  # the new channels are silent
        np.testing.assert_allclose(b["x_hat"].numpy(), a["x_hat"].numpy(), atol=1e-5)
        np.testing.assert_allclose(b["likelihoods"]["y"][:, :24].numpy(), a["likelihoods"]["y"].numpy(),
                                   rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b["likelihoods"]["z"].numpy(), a["likelihoods"]["z"].numpy(), rtol=1e-5)
        assert float(b["likelihoods"]["y"][:, 24:].min()) > 0.9999  # a silent channel costs no bits


def test_the_new_latent_channels_learn():
    """The encoder's weights into a new channel start at zero and move with the first gradient:
    the synthesis reads the new channels through fresh weights, so the distortion reaches them."""
    _, wide = _latent_pair("mgssnet-vr")
    wide.train().set_rate(6.0)
    x = torch.rand(1, 3, 64, 64)
    out = wide(x)
    ((out["x_hat"] - x) ** 2).mean().backward()
    w = wide.g_a[-1].weight
    assert float(w[24:].abs().max()) == 0.0 and float(w.grad[24:].abs().max()) > 0.0


def test_a_narrower_or_odd_latent_is_refused():
    narrow, _ = _latent_pair("mgssnet")
    with pytest.raises(ValueError, match="multiple of 3"):
        widen_latent(narrow, 50)
    with pytest.raises(ValueError, match=">= 24"):
        widen_latent(narrow, 12)


def test_a_wider_latent_decodes_what_the_narrow_one_did(tmp_path):
    """Through the real codec: the same tile decodes to the same pixels, in barely more bytes."""
    import geocompress

    narrow, wide = _latent_pair("mgssnet-vr")
    tile = natural_tile(64, 64)
    outs, sizes = [], []
    for name, m in (("narrow", narrow), ("wide", wide)):
        save_checkpoint(m, tmp_path / f"{name}.pt")
        codec = geocompress.load_codec(checkpoint=str(tmp_path / f"{name}.pt"), quality=5.0,
                                       precision="float32")
        s = codec.encode([tile])
        sizes.append(sum(len(b) for b in s) if isinstance(s, list) else len(s))
        outs.append(codec.decode(s)[0])
    np.testing.assert_array_equal(outs[1], outs[0])
    assert sizes[1] <= sizes[0] + 16


def test_levels_added_below_keep_every_level_and_reach_lower_rates():
    """Old level l is new level l + 3, coding exactly as before; the new bottom levels code with
    coarser steps (fewer bits) and train at the lower lambdas."""
    torch.manual_seed(2)
    m = untrained("mgssnet-vr", N=16, M=24)
    with torch.no_grad():
        m.log_gain.add_(0.05 * torch.randn_like(m.log_gain))
    m.update(force=True)
    m.eval()
    ext = add_levels_below(m, 3)
    assert ext.levels == m.levels + 3 and ext.levels_below == 3 and ext.config["levels_below"] == 3
    assert ext.level_lambdas[3:] == m.level_lambdas and ext.level_lambdas[0] < ext.level_lambdas[1] < m.level_lambdas[0]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for level in (0.0, 2.5, 8.0):
            m.set_rate(level)
            ext.set_rate(level + 3)
            np.testing.assert_allclose(ext.g_a(x).numpy(), m.g_a(x).numpy(), rtol=1e-6)
        ext.set_rate(0.0)
        low = ext.g_a(x)
        ext.set_rate(3.0)
        assert float(low.abs().mean()) < float(ext.g_a(x).abs().mean())  # coarser steps below
    assert float(ext.lambdas_at(1.5)) == pytest.approx((ext.level_lambdas[1] * ext.level_lambdas[2]) ** 0.5)
    with pytest.raises(ValueError, match="already has 3"):
        add_levels_below(ext, 1)
    with pytest.raises(ValueError, match="levels_below"):
        untrained("mgssnet-vr", N=16, M=24, levels=13, levels_below=4)


def test_levels_added_above_keep_every_level_and_reach_higher_rates(tmp_path):
    """Every old level codes exactly as before under its own number; the new top levels code with
    finer steps (more bits), train at the doubled lambdas, and code through the real codec."""
    import geocompress

    torch.manual_seed(3)
    m = add_levels_below(untrained("mgssnet-vr", N=16, M=24), 3)
    with torch.no_grad():
        m.log_gain.add_(0.05 * torch.randn_like(m.log_gain))
    m.eval()
    ext = add_levels_above(m, 2)
    assert ext.levels == m.levels + 2 == 14 and ext.levels_above == 2 and ext.levels_below == 3
    assert ext.level_lambdas[:12] == m.level_lambdas and ext.level_lambdas[12:] == (0.36, 0.72)
    assert val_levels(ext) == (0, 3, 7, 11, 13)  # the table's ends and middle stay validated
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for level in (0.0, 6.5, 11.0):
            m.set_rate(level)
            ext.set_rate(level)
            np.testing.assert_allclose(ext.g_a(x).numpy(), m.g_a(x).numpy(), rtol=1e-6)
        gains = []
        for q in (11.0, 12.0, 13.0):
            ext.set_rate(q)
            gains.append(float(ext.g_a(x).abs().mean()))
        assert gains[0] < gains[1] < gains[2]  # finer quantization steps above the old top
    save_checkpoint(ext, tmp_path / "above.pt")
    tile = natural_tile(64, 64)
    codec = geocompress.load_codec(checkpoint=str(tmp_path / "above.pt"), quality=13.0, precision="float32")
    assert codec.decode(codec.encode([tile]))[0].shape == tile.shape
    with pytest.raises(ValueError, match="0..13"):
        geocompress.load_codec(checkpoint=str(tmp_path / "above.pt"), quality=13.5, precision="float32")
    with pytest.raises(ValueError, match="already has 2"):
        add_levels_above(ext, 1)
    with pytest.raises(ValueError, match="stop below"):
        add_levels_above(untrained("mgssnet-vr", N=16, M=24, levels=5), 1)
    with pytest.raises(ValueError, match="levels must be 2..11"):
        untrained("mgssnet-vr", N=16, M=24, levels=12)


def test_the_entries_a_latent_widening_added_are_named():
    narrow, wide = _latent_pair("mgssnet-vr")
    added = latent_entries_added(wide.config, 24)
    assert "g_a.0.weight" not in added and "entropy_bottleneck._biases.0" not in added
    assert added["g_a.24.weight"][24:].all() and not added["g_a.24.weight"][:24].any()
    assert added["h_a.0.weight"][:, 24:].all() and not added["h_a.0.weight"][:, :24].any()
    assert added["log_gain"][:, 24:].all() and not added["log_gain"][:, :24].any()
    own = latent_entries_added(wide.config, 24, cross=False)  # only what feeds new outputs
    assert "h_a.0.weight" not in own and own["g_a.24.weight"][24:].all()
    assert own["g_s.0.weight"][24:].all()  # how the new channels reach the image stays
    assert own["entropy_parameters.2.weight"][-1].all() and not own["entropy_parameters.2.weight"][0].any()
    # where the new entries sit, the wide model differs from (or extends) the narrow one only there
    old = narrow.state_dict()["entropy_parameters.4.weight"]
    new = wide.state_dict()["entropy_parameters.4.weight"]
    kept = new[~added["entropy_parameters.4.weight"]]
    assert kept.numel() == old.numel() and torch.equal(kept.sort().values, old.flatten().sort().values)
