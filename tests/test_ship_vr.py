"""Shipping the variable-rate MGSSNet (pipelines/ship_vr.py): loadable by name at any level, its
halo prior beside it, refused below the gate or for a curve of other weights, and the weights it
replaces still decoding the strings written with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import geocompress
import geocompress.shipped
from geocompress.codec import weights as W
from geocompress.codec.weights import save_checkpoint, save_prior_delta, state_digest, untrained

from .conftest import natural_tile, pipeline_script


def _vr(tmp: Path, seed: int, **config) -> tuple[Path, str]:
    """A tiny variable-rate checkpoint with a halo prior beside it; its digest."""
    torch.manual_seed(seed)
    m = untrained("mgssnet-vr", N=16, M=24, **config)
    with torch.no_grad():
        m.log_gain.add_(0.05 * torch.randn_like(m.log_gain))
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "mgssnet-vr.pt"
    save_checkpoint(m, path, meta={"level_lambdas": list(m.level_lambdas), "default_quality": 4.0,
                                   "total_steps": 1000 + seed})
    digest = state_digest(W.load_checkpoint(path).state_dict())
    with torch.no_grad():
        m.h_s[0].weight.mul_(1.01)
    save_prior_delta(m, tmp / "mgssnet-vr-halo.pt", digest, ("h_s.",))
    return path, digest


def _rd(path: Path, digest: str, ladder: float = 1.5, top: float = 0.95, shared=(0.08, 0.28)) -> Path:
    rd = {"digest": digest, "cpu": "test", "sets": {"rs-v1": {
        "curve": [[0.0, 0.05, 20.0, 5.0], [8.0, top, 30.0, 15.0]],
        "ladder_curve": [[1, 0.08, 25.0, 9.0], [4, 0.28, 27.4, 12.0]],
        "bd": {"ladder": {"psnr": {"bd_rate_percent": ladder, "shared_bpp": list(shared)}}}}}}
    out = path.with_name(f"rd-{digest[:6]}-{ladder}-{top}-{shared[0]}.json")
    out.write_text(json.dumps(rd))
    return out


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package weights folder of its own (the real one stays as it is)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "index.json").write_text("{}\n")
    sv = pipeline_script("ship_vr")
    monkeypatch.setattr(sv, "WEIGHTS", pkg)
    index = lambda: json.loads((pkg / "index.json").read_text())  # noqa: E731
    monkeypatch.setattr(W, "shipped_index", index)
    monkeypatch.setattr(geocompress.shipped, "shipped_index", index)
    monkeypatch.setattr(W, "_weights_file", lambda name: pkg / name)
    return sv, pkg


def test_shipped_vr_loads_by_name_at_any_level_with_its_halo_prior(tmp_path, package):
    sv, pkg = package
    ckpt, digest = _vr(tmp_path / "a", 0)
    entry = sv.ship(ckpt, _rd(ckpt, digest))
    assert entry["levels"] == 9 and entry["default"] == 4.0 and "halo_prior" in entry
    assert (pkg / entry["file"]).is_file() and (pkg / entry["halo_prior"]["file"]).is_file()
    codec = geocompress.load_codec("mgssnet-vr", quality=2.5, precision="float32")
    assert codec.quality == 2.5 and codec.digest == digest
    tile = natural_tile(64, 64)
    assert codec.decode(codec.encode([tile]))[0].shape == tile.shape
    assert geocompress.load_codec("mgssnet-vr", precision="float32").quality == 4.0
    halo = geocompress.load_codec("mgssnet-vr", quality=1.0, halo_prior=True, precision="float32")
    assert halo.digest == entry["halo_prior"]["digest"] != digest
    with pytest.raises(ValueError, match="outside this model's range 0..8"):
        geocompress.load_codec("mgssnet-vr", quality=8.5)
    from geocompress.scene.halo import DEFAULT_HALO, resolve_halo

    assert resolve_halo("auto", "mgssnet-vr", 3.5, True, None) == DEFAULT_HALO


def test_replaced_vr_weights_still_decode_their_strings(tmp_path, package):
    sv, pkg = package
    old, old_digest = _vr(tmp_path / "a", 0)
    sv.ship(old, _rd(old, old_digest))
    codec = geocompress.load_codec("mgssnet-vr", quality=3.0, precision="float32")
    tile = natural_tile(64, 64)
    strings = codec.encode([tile])
    before = codec.decode(strings)[0]
    new, new_digest = _vr(tmp_path / "b", 1)
    entry = sv.ship(new, _rd(new, new_digest))
    assert entry["digest"] == new_digest != old_digest
    assert [e["digest"] for e in entry["superseded"]] == [old_digest]
    assert geocompress.load_codec("mgssnet-vr", precision="float32").digest == new_digest
    again = geocompress.load_codec("mgssnet-vr", quality=3.0, digest=old_digest, precision="float32")
    assert again.digest == old_digest
    np.testing.assert_array_equal(again.decode(strings)[0], before)
    prior = entry["superseded"][0]["halo_prior"]["digest"]
    assert geocompress.load_codec("mgssnet-vr", quality=3.0, digest=prior).digest == prior
    assert sv.ship(new, _rd(new, new_digest))["superseded"] == entry["superseded"]  # the same again
    # the same weights with a refitted prior: the prior replaced still decodes its stores
    m = W.load_checkpoint(new)
    with torch.no_grad():
        m.h_s[0].weight.mul_(0.99)
    save_prior_delta(m, new.with_name("mgssnet-vr-halo.pt"), new_digest, ("h_s.",))
    refit = sv.ship(new, _rd(new, new_digest))
    assert refit["halo_prior"]["digest"] != entry["halo_prior"]["digest"]
    assert refit["halo_prior_superseded"] == [entry["halo_prior"]] and (pkg / entry["halo_prior"]["file"]).is_file()
    for d in (entry["halo_prior"]["digest"], refit["halo_prior"]["digest"]):
        assert geocompress.load_codec("mgssnet-vr", quality=3.0, digest=d).digest == d


def test_replaced_vr_weights_decode_at_levels_the_new_scale_lacks(tmp_path, package):
    """A store's level is checked against the weights it names: one written at level 7.5 of a
    9-level model stays readable after weights of 6 levels ship (it was refused as outside
    0..5 before the earlier weights were looked up)."""
    sv, _ = package
    old, old_digest = _vr(tmp_path / "a", 0)
    sv.ship(old, _rd(old, old_digest))
    codec = geocompress.load_codec("mgssnet-vr", quality=7.5, precision="float32")
    strings = codec.encode([natural_tile(64, 64)])
    before = codec.decode(strings)[0]
    new, new_digest = _vr(tmp_path / "b", 1, levels=6)
    entry = sv.ship(new, _rd(new, new_digest))
    assert entry["levels"] == 6 and entry["superseded"][0]["levels"] == 9
    again = geocompress.load_codec("mgssnet-vr", quality=7.5, digest=old_digest, precision="float32")
    assert again.digest == old_digest and again.quality == 7.5
    np.testing.assert_array_equal(again.decode(strings)[0], before)
    prior = entry["superseded"][0]["halo_prior"]["digest"]
    assert geocompress.load_codec("mgssnet-vr", quality=7.5, digest=prior).digest == prior
    with pytest.raises(ValueError, match="outside this model's range 0..8"):
        geocompress.load_codec("mgssnet-vr", quality=8.5, digest=old_digest)
    with pytest.raises(ValueError, match="outside this model's range 0..5"):
        geocompress.load_codec("mgssnet-vr", quality=7.5)


def _shipped_and_scene(tmp_path: Path, package, shape: tuple[int, int], seed: int
                       ) -> tuple[str, Path, np.ndarray, dict]:
    """A tiny variable-rate model shipped into ``package``, and a scene to code: the shipped
    weights' digest, the scene's path and pixels, and the scene calls' common options."""
    from .test_scene import write_scene

    sv, _ = package
    ckpt, digest = _vr(tmp_path / "a", 0)
    sv.ship(ckpt, _rd(ckpt, digest))
    data = natural_tile(*shape, seed=seed)
    src = write_scene(tmp_path / "s.tif", data)
    return digest, src, data, dict(processes=False, progress=False, precision="float32")


def test_a_scene_at_level_0_of_the_shipped_vr_decodes(tmp_path, package):
    """Level 0 is a level: a store written there decodes with the shipped weights it names."""
    from geocompress.scene import compress_scene, decompress_scene

    _, src, data, kw = _shipped_and_scene(tmp_path, package, (64, 128), seed=2)
    r = compress_scene(src, tmp_path / "s.zarr", arch="mgssnet-vr", quality=0.0, tile=64, halo=0, **kw)
    assert r.quality == 0.0
    from geocompress.scene import workers

    workers._CACHE.clear()  # as a fresh worker process: the codec is built from the store's spec
    out = decompress_scene(tmp_path / "s.zarr", tmp_path / "out.tif", **kw)
    import rasterio

    with rasterio.open(out) as f:
        assert f.read().shape == data.shape


def test_ship_refuses_below_the_gate_and_a_curve_of_other_weights(tmp_path, package):
    sv, pkg = package
    ckpt, digest = _vr(tmp_path / "a", 0)
    with pytest.raises(SystemExit, match="ladder 4.0 %.*top level at 0.700 bpp"):
        sv.ship(ckpt, _rd(ckpt, digest, ladder=4.0, top=0.7))
    with pytest.raises(SystemExit, match="measured weights"):
        sv.ship(ckpt, _rd(ckpt, "0" * 64))
    with pytest.raises(SystemExit, match="not the ladder's span"):  # BD over part of the span only
        sv.ship(ckpt, _rd(ckpt, digest, shared=(0.15, 0.28)))
    with pytest.raises(SystemExit, match="ladder nan"):
        sv.ship(ckpt, _rd(ckpt, digest, ladder=float("nan")))
    prior = ckpt.with_name("mgssnet-vr-halo.pt")  # without the halo prior: the default would
    prior.rename(prior.with_suffix(".away"))        # code at halo 0 (seams)
    with pytest.raises(SystemExit, match="no halo prior beside .* refits these weights"):
        sv.ship(ckpt, _rd(ckpt, digest))
    prior.with_suffix(".away").rename(prior)
    assert json.loads((pkg / "index.json").read_text()) == {} and len(list(pkg.iterdir())) == 1
    sv.ship(ckpt, _rd(ckpt, digest, ladder=4.0, top=0.7), force=True)
    assert "mgssnet-vr" in json.loads((pkg / "index.json").read_text())


def test_a_store_of_the_fixed_seed_vr_weights_decodes_after_a_vr_model_ships(tmp_path, package):
    """``compress --untrained`` at a level writes the fixed-seed weights' digest; once weights of
    that architecture ship, the store is still decoded with the weights it names (it failed with
    "weights ... differ from the store's")."""
    from geocompress.scene import compress_scene, decompress_scene, workers

    digest, src, data, kw = _shipped_and_scene(tmp_path, package, (64, 64), seed=3)
    r = compress_scene(src, tmp_path / "s.zarr", arch="mgssnet-vr", quality=2.0, pretrained=False,
                       config={"N": 16, "M": 24}, tile=64, halo=0, **kw)
    fixed = untrained("mgssnet-vr", N=16, M=24)
    assert r.quality == 2.0
    workers._CACHE.clear()
    out = decompress_scene(tmp_path / "s.zarr", tmp_path / "out.tif", **kw)
    import rasterio

    expect = geocompress.load_codec("mgssnet-vr", quality=2.0, pretrained=False, N=16, M=24,
                                    precision="float32")
    assert expect.digest == state_digest(fixed.state_dict()) != digest
    with rasterio.open(out) as f:
        got = f.read()
    assert np.array_equal(got, expect.decode(expect.encode([data]))[0])
