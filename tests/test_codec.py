"""The codec's promises: real bytes, exact round trips, determinism, and loud failures."""

import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch

import geocompress
from geocompress import metrics
from geocompress.codec import (
    CodecError,
    CorruptStreamError,
    ForeignStreamError,
    TruncatedStreamError,
    UnsupportedVersionError,
    WeightsError,
    WeightsMismatchError,
    load_checkpoint,
    save_checkpoint,
    untrained,
)

from .conftest import REPO, SMALL, natural_tile


@pytest.mark.parametrize("arch", list(SMALL))
def test_decode_equals_the_encoders_own_quantized_reconstruction(arch, small_codecs):
    codec = small_codecs(arch)
    tiles = [natural_tile(64, 64, seed=1), natural_tile(50, 70, seed=2)]  # second: odd size
    strings, recon = codec.encode_with_reconstruction(tiles)
    assert all(isinstance(s, bytes) for s in strings)
    decoded = codec.decode(strings)
    for t, d, r in zip(tiles, decoded, recon):
        assert d.shape == t.shape and d.dtype == t.dtype
        np.testing.assert_array_equal(d, r)


def test_reconstruction_is_the_models_quantized_latent(small_codecs):
    """The decoded pixels are g_s(round-to-Gaussian-mean y): close to the model's forward pass."""
    codec = small_codecs("mbt2018-mean")
    tile = natural_tile(64, 64, seed=3)
    decoded = codec.decode(codec.encode([tile]))[0]
    x = torch.from_numpy(tile / 255.0)[None].to(codec.dtype)
    with torch.no_grad():
        fwd = codec.model(x)["x_hat"].clamp(0, 1)[0].numpy() * 255
    assert np.abs(decoded.astype(float) - fwd).mean() < 3.0


def test_batch_size_and_batching_do_not_change_bytes_or_pixels(small_codecs):
    codec = small_codecs("mgssnet")
    tiles = [natural_tile(64, 64, seed=s) for s in range(3)]
    together = codec.encode(tiles)
    alone = [codec.encode([t])[0] for t in tiles]
    assert together == alone
    decoded_batch = codec.decode(together)
    old = codec.batch_size
    try:
        codec.batch_size = 1
        decoded_single = codec.decode(together)
    finally:
        codec.batch_size = old
    for a, b in zip(decoded_batch, decoded_single):
        np.testing.assert_array_equal(a, b)


def test_thread_count_does_not_change_decoding(small_codecs, tmp_path):
    """Another process with one thread decodes these bytes to the same pixels."""
    codec = small_codecs("mgssnet")
    tiles = [natural_tile(64, 64, seed=7), natural_tile(64, 64, seed=8)]
    strings = codec.encode(tiles)
    ours = codec.decode(strings)
    np.save(tmp_path / "strings.npy", np.array(strings, dtype=object), allow_pickle=True)
    script = (
        "import numpy as np, torch, geocompress, sys\n"
        "torch.set_num_threads(1)\n"
        f"c = geocompress.load_codec('mgssnet', pretrained=False, **{SMALL['mgssnet']!r})\n"
        "s = list(np.load(sys.argv[1], allow_pickle=True))\n"
        "np.save(sys.argv[2], np.stack(c.decode(s)))\n"
        "np.save(sys.argv[3], np.array(c.encode([np.load(sys.argv[4])]), dtype=object), allow_pickle=True)\n"
    )
    np.save(tmp_path / "tile.npy", tiles[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script, tmp_path / "strings.npy", tmp_path / "out.npy",
                    tmp_path / "enc.npy", tmp_path / "tile.npy"], check=True, env=env, cwd=REPO)
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), np.stack(ours))
    assert list(np.load(tmp_path / "enc.npy", allow_pickle=True)) == strings[:1]


@pytest.mark.parametrize("bands", [1, 2, 4, 5])
def test_any_band_count_round_trips(small_codecs, bands):
    codec = small_codecs("mbt2018")
    tile = natural_tile(64, 64, c=bands, seed=bands)
    strings, recon = codec.encode_with_reconstruction([tile])
    decoded = codec.decode(strings)[0]
    assert decoded.shape == (bands, 64, 64)
    np.testing.assert_array_equal(decoded, recon[0])
    assert codec.header(strings[0]).channels == bands


def test_two_dimensional_tile_is_one_band(small_codecs):
    codec = small_codecs("mbt2018-mean")
    tile = natural_tile(64, 64, c=1)[0]
    assert codec.decode(codec.encode(tile))[0].shape == (1, 64, 64)


def test_uint16_with_declared_bit_depth(small_codecs):
    codec = small_codecs("mbt2018-mean")
    tile = natural_tile(64, 64, dtype=np.uint16)  # 12-bit values
    s = codec.encode([tile], bits=12)
    h = codec.header(s[0])
    assert (h.dtype, h.bits) == (np.dtype("uint16"), 12)
    out = codec.decode(s)[0]
    assert out.dtype == np.uint16 and out.max() <= 4095
    with pytest.raises(CodecError, match="more than bits=8"):
        codec.encode([tile], bits=8)


def test_unsupported_inputs_get_clear_errors(small_codecs):
    codec = small_codecs("mbt2018-mean")
    with pytest.raises(CodecError, match="unsupported tile dtype float32"):
        codec.encode([np.zeros((3, 64, 64), np.float32)])
    with pytest.raises(CodecError, match="non-empty"):
        codec.encode([np.zeros((3, 0, 64), np.uint8)])
    with pytest.raises(CodecError, match="B x C x H x W"):
        codec.encode(np.zeros((1, 1, 3, 8, 8), np.uint8))


def test_header_is_self_describing_and_bpp_counts_it(small_codecs):
    codec = small_codecs("mgssnet")
    tile = natural_tile(50, 70, seed=4)
    s = codec.encode([tile])[0]
    h = codec.header(s)
    assert (h.arch, h.channels, h.height, h.width, h.pad_h, h.pad_w) == ("mgssnet", 3, 50, 70, 64, 128)
    assert h.digest == bytes.fromhex(codec.digest[:16])
    assert metrics.bpp([s], 50 * 70) == 8 * len(s) / 3500


@pytest.fixture(scope="module")
def one_string(small_codecs):
    codec = small_codecs("mbt2018")
    return codec, codec.encode([natural_tile(64, 64, seed=5)])[0]


@pytest.mark.parametrize("cut", [0, 3, 10, 30, -20, -5, -1])
def test_truncated_strings_are_refused(one_string, cut):
    codec, s = one_string
    with pytest.raises((TruncatedStreamError, CorruptStreamError)):
        codec.decode([s[:cut]])


def test_every_flipped_byte_is_detected(one_string):
    codec, s = one_string
    for pos in range(0, len(s), max(1, len(s) // 40)):
        bad = bytearray(s)
        bad[pos] ^= 0x5A
        with pytest.raises(CodecError):
            codec.decode([bytes(bad)])
    bad = bytearray(s)
    bad[len(s) - 6] ^= 1  # inside the last entropy-coded stream
    with pytest.raises(CorruptStreamError, match="checksum"):
        codec.decode([bytes(bad)])


def test_foreign_and_future_strings_are_refused(one_string):
    codec, s = one_string
    with pytest.raises(ForeignStreamError, match="not a geocompress tile string"):
        codec.decode([b"\x89PNG\r\n\x1a\n" + s])
    with pytest.raises(TruncatedStreamError):
        codec.decode([b""])
    future = bytearray(s[:-4])
    future[4] = 99
    future += struct.pack("<I", zlib.crc32(bytes(future)))
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        codec.decode([bytes(future)])


def test_strings_from_other_weights_are_refused(one_string, small_codecs):
    codec, s = one_string
    other = small_codecs("mbt2018", M=32)
    with pytest.raises(WeightsMismatchError, match="encoded by mbt2018 weights"):
        other.decode([s])
    with pytest.raises(WeightsMismatchError):
        small_codecs("mgssnet").decode([s])


def test_checkpoint_round_trip_keeps_digest_and_detects_damage(tmp_path):
    model = untrained("mbt2018-mean", N=16, M=24)
    digest = save_checkpoint(model, tmp_path / "q1.pt", meta={"lambda": 0.0130})
    codec = geocompress.load_codec(checkpoint=str(tmp_path / "q1.pt"))
    assert codec.digest == digest
    tile = natural_tile(64, 64)
    strings, recon = codec.encode_with_reconstruction([tile])
    np.testing.assert_array_equal(codec.decode(strings)[0], recon[0])
    assert load_checkpoint(tmp_path / "q1.pt", expected_digest=digest).meta["lambda"] == 0.0130
    with pytest.raises(WeightsError, match="does not match"):
        load_checkpoint(tmp_path / "q1.pt", expected_digest="0" * 64)
    (tmp_path / "bad.pt").write_bytes((tmp_path / "q1.pt").read_bytes()[:500])
    with pytest.raises(WeightsError, match="damaged"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_fp16_checkpoint_keeps_the_architectures_constants(tmp_path):
    """fp16 would turn the 1e-9 likelihood bounds and GDN pedestals into 0: a zero likelihood
    is an infinite loss in training. Buffers stay exact; old all-fp16 files get them back."""
    model = untrained("mgssnet", N=16, M=24)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    params = {n for n, _ in model.named_parameters()}
    save_checkpoint(model, tmp_path / "new.pt")
    sd = torch.load(tmp_path / "new.pt", weights_only=True)["state_dict"]
    assert all(sd[n].dtype == torch.float16 for n in params)  # the size saving stays
    bounds = [k for k in sd if k.endswith("likelihood_lower_bound.bound")]
    assert bounds and all(float(sd[k]) == pytest.approx(1e-9) for k in bounds)
    # a checkpoint written the old way: every floating tensor in fp16
    old = torch.load(tmp_path / "new.pt", weights_only=True)
    old["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    assert all(float(old["state_dict"][k]) == 0.0 for k in bounds)
    torch.save(old, tmp_path / "old.pt")
    zeroed = [k for k, v in fresh.items() if k not in params and v.is_floating_point()
              and v.any() and not v.half().any()]
    assert set(bounds) <= set(zeroed) and any(k.endswith("pedestal") for k in zeroed)
    for k, v in load_checkpoint(tmp_path / "new.pt").state_dict().items():
        if k not in params and v.is_floating_point():
            assert torch.equal(v, fresh[k]), k
    loaded = load_checkpoint(tmp_path / "old.pt").state_dict()
    for k in zeroed:  # given back ...
        assert torch.equal(loaded[k], fresh[k]), k
    for k, v in old["state_dict"].items():  # ... and what fp16 only rounded decodes as it was
        if k not in zeroed and v.is_floating_point():
            assert torch.equal(loaded[k], v.float()), k


def test_pretrained_without_shipped_weights_says_what_to_do():
    with pytest.raises(WeightsError, match="no shipped"):
        geocompress.load_codec("bmshj2018-hyperprior", pretrained=True)


def test_untrained_weights_are_reproducible():
    a = untrained("mgssnet", N=16, M=24)
    b = untrained("mgssnet", N=16, M=24)
    from geocompress.codec import state_digest
    assert state_digest(a.state_dict()) == state_digest(b.state_dict())


def test_tiles_of_different_sizes_with_one_padded_size_share_a_batch(small_codecs):
    codec = small_codecs("mgssnet")
    tiles = [natural_tile(64, 64, seed=1), natural_tile(40, 48, seed=2), natural_tile(63, 17, seed=3)]
    together = codec.decode(codec.encode(tiles))
    alone = [codec.decode(codec.encode([t]))[0] for t in tiles]
    for t, a, b in zip(tiles, together, alone):
        assert a.shape == t.shape
        assert np.abs(a.astype(int) - b).max() <= 2  # bf16 batches may differ by a level


def test_a_12_bit_uint16_tile_is_scaled_by_its_own_range(small_codecs):
    codec = small_codecs("mbt2018-mean")
    tile = natural_tile(64, 64, dtype=np.uint16, seed=4)  # values up to 4095
    s = codec.encode([tile])[0]
    assert codec.header(s).bits == 12  # was 16: the model saw [0, 0.06]
    assert codec.header(codec.encode([tile], bits=16)[0]).bits == 16
    assert codec.decode([s])[0].max() <= 4095
