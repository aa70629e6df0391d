"""The variable-rate MGSSNet (gain units): its rate scale, its strings, its training step.

What a user relies on: one model codes at any level of its scale, the level travels in each
tile's header and the decoder follows it (tiles of different rates in one batch included), more
level means more bytes, strings of fixed-rate models are unchanged, and a level outside the scale
is one clear error before any work."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from geocompress.codec.errors import CodecError, CorruptStreamError
from geocompress.codec.format import FORMAT_VERSION, RATE_VERSION, quantize_rate, read_header
from geocompress.codec.tile_codec import TileCodec
from geocompress.codec.weights import save_checkpoint, untrained
from geocompress.models import build
from geocompress.models.variable_rate import LEVEL_LAMBDAS, MGSSNetVR, lambda_at

from .conftest import SMALL, natural_tile

VR = SMALL["mgssnet-vr"]


def _spread_model() -> MGSSNetVR:
    """An untrained model whose gains span a wide range (trained ones do; the init's span is
    too narrow for an untrained trunk's tiny latents to show it in bytes)."""
    m = untrained("mgssnet-vr", **VR)
    with torch.no_grad():
        steps = torch.linspace(0.0, 6.0, m.levels)[:, None]
        m.log_gain.copy_(steps.expand_as(m.log_gain))
        m.log_inverse_gain.copy_(-steps.expand_as(m.log_inverse_gain))
    return m


def _codec(level: float, precision: str = "float64") -> TileCodec:
    return TileCodec(_spread_model(), quality=level, precision=precision)


def test_lambda_scale_is_the_fixed_rate_ladders_and_log_linear_between():
    assert [round(float(lambda_at(q)), 6) for q in range(len(LEVEL_LAMBDAS))] == list(LEVEL_LAMBDAS)
    mid = float(lambda_at(2.5))
    assert mid == pytest.approx((LEVEL_LAMBDAS[2] * LEVEL_LAMBDAS[3]) ** 0.5, rel=1e-5)


def test_gains_interpolate_exponentially_and_levels_are_checked():
    m = MGSSNetVR(N=16, M=24)
    with torch.no_grad():
        m.log_gain.copy_(torch.randn_like(m.log_gain))
    g = m.gain_vectors(torch.tensor([3.0, 3.25]))[:, :, 0, 0]
    assert torch.allclose(g[0], m.log_gain[3].exp())
    expected = (m.log_gain[3] * 0.75 + m.log_gain[4] * 0.25).exp()
    assert torch.allclose(g[1], expected)
    for bad in (-0.1, 8.5, float("nan"), float("inf"), "x"):
        with pytest.raises(ValueError, match="rate level"):
            m.set_rate(bad)
    with pytest.raises(ValueError, match="outside"):
        m.set_rate(torch.tensor([1.0, 9.0]))


def test_per_sample_rates_scale_each_sample_of_a_batch():
    torch.manual_seed(0)
    m = MGSSNetVR(N=16, M=24).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        m.set_rate(torch.tensor([1.0, 7.0]))
        both = m.g_a(x)
        m.set_rate(1.0)
        first = m.g_a(x[:1])
        m.set_rate(7.0)
        second = m.g_a(x[1:])
    assert torch.allclose(both[0], first[0], atol=1e-5) and torch.allclose(both[1], second[0], atol=1e-5)
    # one image at two levels: the latents differ by the two gains' ratio, channel by channel
    with torch.no_grad():
        m.set_rate(torch.tensor([1.0, 7.0]))
        pair = m.g_a(x[:1].repeat(2, 1, 1, 1))
    ratio = (m.log_gain[7] - m.log_gain[1]).exp()[:, None, None].detach()
    assert torch.allclose(pair[1], pair[0] * ratio, atol=1e-5, rtol=1e-4)


def test_the_synthesis_layers_alone_are_g_s_without_its_inverse_gain():
    """``g_s.ungained`` is what every level shares: handed the inverse-gained latent it gives the
    level's own reconstruction (the decoder search of ``benchmarks/vr_ceiling.py`` works on it)."""
    torch.manual_seed(0)
    m = _spread_model().eval()
    y = torch.randn(1, m.config["M"], 4, 4)
    with torch.no_grad():
        for level in (0.0, 5.5, float(m.levels - 1)):
            m.set_rate(level)
            inv = m.gain_vectors(torch.tensor([level]), inverse=True)
            assert torch.allclose(m.g_s.ungained(y * inv), m.g_s(y), atol=1e-6)
        assert not torch.allclose(m.g_s.ungained(y), m.g_s(y))


def test_warm_start_from_fixed_rate_weights_keeps_the_trunk(tmp_path):
    from geocompress.training.checkpoints import load_weights

    fixed = untrained("mgssnet", **SMALL["mgssnet"])
    path = tmp_path / "fixed.pt"
    save_checkpoint(fixed, path)
    vr = build("mgssnet-vr", **VR)
    load_weights(vr, path)
    a, b = fixed.state_dict(), vr.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-2) for k in a if k.startswith("g_a."))
    with pytest.raises(RuntimeError):  # a trunk of other widths is refused, not half-loaded
        load_weights(build("mgssnet-vr", N=16, M=32), path)


def test_rate_travels_in_the_header_and_more_level_costs_more_bytes():
    tiles = [natural_tile(64, 64, seed=s) for s in range(2)]
    sizes = {}
    for level in (0.0, 4.0, 8.0):
        codec = _codec(level)
        strings = codec.encode(tiles)
        h = read_header(strings[0])[0]
        assert h.version == RATE_VERSION and h.rate == level and h.quality == 0
        out = codec.decode(strings)
        assert all(o.shape == t.shape and o.dtype == t.dtype for o, t in zip(out, tiles))
        sizes[level] = sum(map(len, strings))
    assert sizes[0.0] < sizes[4.0] < sizes[8.0]


def test_a_continuous_level_is_coded_at_the_headers_thousandths():
    codec = _codec(2.71828)
    assert codec.rate == quantize_rate(2.71828) == 2.718
    s = codec.encode([natural_tile(64, 64)])[0]
    assert read_header(s)[0].rate == 2.718


def test_tiles_of_different_rates_decode_together_as_alone():
    """One decoder, strings written at two rates, batched: each follows its own header."""
    low = TileCodec(_spread_model(), quality=1.0, precision="float64")
    tiles = [natural_tile(64, 64, seed=3), natural_tile(64, 64, seed=4)]
    s_low = low.encode(tiles[:1])
    high = TileCodec(_spread_model(), quality=6.5, precision="float64")
    s_high = high.encode(tiles[1:])
    together = low.decode(s_low + s_high)
    np.testing.assert_array_equal(together[0], low.decode(s_low)[0])
    np.testing.assert_array_equal(together[1], high.decode(s_high)[0])
    _, recon = high.encode_with_reconstruction(tiles[1:])
    np.testing.assert_array_equal(together[1], recon[0])


def _with_rate_code(s: bytes, code: int) -> bytes:
    """``s`` with its header's rate field set to ``code`` and the CRC recomputed (a forgery)."""
    arch_len = s[5]
    pos = 4 + 2 + arch_len + struct.calcsize("<8sBBBHHHHH") + 1
    body = s[:pos] + struct.pack("<H", code) + s[pos + 2:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_a_forged_rate_outside_the_scale_is_refused_before_decoding():
    codec = _codec(3.0)
    s = codec.encode([natural_tile(64, 64)])[0]
    with pytest.raises(CorruptStreamError, match="outside"):
        codec.decode([_with_rate_code(s, 9000)])
    with pytest.raises(CorruptStreamError, match="no rate"):
        codec.decode([_with_rate_code(s, 0xFFFF)])


def test_a_string_of_other_variable_rate_weights_names_its_level():
    from geocompress.codec.errors import WeightsMismatchError

    s = _codec(3.25).encode([natural_tile(64, 64)])[0]
    other = _spread_model()
    with torch.no_grad():
        other.log_gain.add_(0.1)
    with pytest.raises(WeightsMismatchError, match=r"\(level 3.25\)"):
        TileCodec(other, quality=3.25).decode([s])


def test_fixed_rate_models_still_write_format_3_and_refuse_fractional_qualities(small_codecs):
    codec = small_codecs("mgssnet")
    s = codec.encode([natural_tile(64, 64)])[0]
    h = read_header(s)[0]
    assert h.version == FORMAT_VERSION == 3 and h.rate is None
    with pytest.raises(CodecError, match="variable-rate"):
        TileCodec(untrained("mgssnet", **SMALL["mgssnet"]), quality=2.5)
    # a variable-rate decoder refuses a fixed-rate string and vice versa (different weights
    # anyway; the rate field's presence is checked first for strings of forged origin)
    with pytest.raises(CodecError):
        _codec(3.0).decode([s])


def test_a_fixed_rate_checkpoint_codes_at_its_own_quality_or_refuses(tmp_path):
    """A quality a fixed-rate file does not hold was truncated (2.5 -> 2, 0.7 -> 0) and recorded:
    the store then named weights it was not written with (0: decoded as the untrained net)."""
    from geocompress import load_codec

    path = tmp_path / "q3.pt"
    save_checkpoint(untrained("mgssnet", **SMALL["mgssnet"]), path, meta={"quality": 3})
    assert load_codec(checkpoint=str(path)).quality == 3
    assert load_codec(checkpoint=str(path), quality=3).quality == 3
    for q in (0.7, 2.5, 7):
        with pytest.raises(ValueError, match="quality 3"):
            load_codec(checkpoint=str(path), quality=q)
    with pytest.raises(CodecError, match="variable-rate"):
        load_codec("mgssnet", quality=2.5, pretrained=False, **SMALL["mgssnet"])
    assert load_codec("mgssnet", quality=2, pretrained=False, **SMALL["mgssnet"]).quality == 2


def test_training_step_samples_levels_and_logs_each_validation_level(tmp_path):
    """Two steps of the real trainer on a tiny store: per-sample lambdas, validation rows per
    level, and a checkpoint the codec loads at any level."""
    import zarr

    from geocompress import load_codec
    from geocompress.training.trainer import train

    root = zarr.open_group(tmp_path / "ds.zarr", mode="w", zarr_format=3)
    imgs = np.stack([natural_tile(64, 64, seed=s) for s in range(6)])
    root.create_array("images", data=imgs, chunks=(1, 3, 64, 64))
    root.create_array("split", data=np.array([0, 0, 0, 0, 1, 1], np.int8), chunks=(6,))
    r = train("mgssnet-vr", VR, tmp_path / "ds.zarr", 0.0, tmp_path / "run", steps=2, batch=4,
              crop=64, val_every=2, progress=False, threads=1, precision="float32")
    assert r.finished and all(np.isfinite(r.losses))
    log = (tmp_path / "run" / "log.csv").read_text()
    assert "val@q0" in log and "val@q4" in log and "val@q8" in log
    codec = load_codec(checkpoint=str(r.checkpoint), quality=5.5, precision="float64")
    assert codec.rate == 5.5
    tile = natural_tile(64, 64, seed=9)
    assert codec.decode(codec.encode([tile]))[0].shape == tile.shape


def test_cli_quality_accepts_the_continuous_scale_and_refuses_nonsense():
    import argparse

    from geocompress.cli import _quality

    assert _quality("3") == 3 and isinstance(_quality("3"), int)
    assert _quality("2.5") == 2.5
    for bad in ("-1", "nan", "inf", "high"):
        with pytest.raises(argparse.ArgumentTypeError):
            _quality(bad)


def test_a_frozen_trunk_stays_as_it_was_while_the_gains_learn(tmp_path):
    """freeze=("g_a.", "g_s."): the transforms of the warm start come out unchanged, the gains
    and the entropy model do not; a prefix naming nothing is an error, not a silent no-op."""
    import zarr

    from geocompress.training.checkpoints import load_weights
    from geocompress.training.trainer import train

    root = zarr.open_group(tmp_path / "ds.zarr", mode="w", zarr_format=3)
    imgs = np.stack([natural_tile(64, 64, seed=s) for s in range(6)])
    root.create_array("images", data=imgs, chunks=(1, 3, 64, 64))
    root.create_array("split", data=np.array([0, 0, 0, 0, 1, 1], np.int8), chunks=(6,))
    start = untrained("mgssnet-vr", **VR)
    save_checkpoint(start, tmp_path / "start.pt")
    r = train("mgssnet-vr", VR, tmp_path / "ds.zarr", 0.0, tmp_path / "run", steps=3, batch=4,
              crop=64, val_every=3, progress=False, threads=1, precision="float32",
              warm_start=tmp_path / "start.pt", warmup_steps=0, freeze=("g_a.", "g_s."))
    after = build("mgssnet-vr", **VR)
    load_weights(after, r.checkpoint)
    before = build("mgssnet-vr", **VR)
    load_weights(before, tmp_path / "start.pt")
    a, b = before.state_dict(), after.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("g_a.", "g_s.")))
    assert not torch.equal(a["log_gain"], b["log_gain"])
    with pytest.raises(ValueError, match="no parameter"):
        train("mgssnet-vr", VR, tmp_path / "ds.zarr", 0.0, tmp_path / "run2", steps=1, batch=4,
              crop=64, progress=False, threads=1, freeze=("g_x.",))


def test_level_balance_weighs_levels_by_their_running_loss_and_logs_the_plain_mean():
    from geocompress.training.loss import RateDistortionLoss

    torch.manual_seed(0)
    target = torch.rand(2, 3, 8, 8)
    # sample 0 (level 0.5) nearly exact, sample 1 (level 8.0) far off: very different losses
    x_hat = torch.stack([target[0] + 0.01, target[1] + 0.2]).requires_grad_(True)
    out = {"x_hat": x_hat, "likelihoods": {"y": torch.full((2, 4, 2, 2), 0.5)}}
    lambdas, levels = torch.tensor([0.0009, 0.18]), torch.tensor([0.5, 8.0])
    plain, balanced = RateDistortionLoss(0.0), RateDistortionLoss(0.0, balance=1.0)
    plain.per_sample(lambdas, levels)
    balanced.per_sample(lambdas, levels)
    p, b = plain(out, target), balanced(out, target)
    assert "objective" not in p and torch.allclose(p["loss"], b["loss"])  # what is logged
    bpp = 4 * 2 * 2 / 64  # 16 latents at 1 bit each over 64 pixels
    loss_i = bpp + lambdas * 255 ** 2 * ((x_hat - target) ** 2).flatten(1).mean(1)
    w = loss_i.detach() ** -1
    w = w / w.mean()  # weights average 1 over the levels seen
    assert torch.allclose(b["objective"], (w * loss_i).mean())
    assert balanced.level_loss.keys() == {0, 8}
    # each level's relative change counts alike: equal gradient of log-loss per sample
    g = torch.autograd.grad(b["objective"], x_hat)[0]
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0
