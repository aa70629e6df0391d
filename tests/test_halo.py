"""Tiles coded with a halo of neighbour context (issue 26): regions decode to crops of the whole."""

import numpy as np
import pytest
import rasterio

from geocompress.scene import OutputSpec, compress_scene, decompress_scene, store_info
from geocompress.store import TileStore

from .conftest import natural_tile
from .test_scene import TINY, write_scene


@pytest.fixture(scope="module")
def halo_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("halo")
    data = natural_tile(192, 256, seed=12)
    data[:, :64, :64] = 0  # a dropped (nodata) neighbour
    src = write_scene(tmp / "s.tif", data, nodata=0)
    store = tmp / "h.zarr"
    compress_scene(src, store, **TINY, halo=1, precision="float64")
    return src, store


def test_a_window_decode_equals_the_crop_of_the_full_decode(halo_store, tmp_path):
    src, store = halo_store
    kw = dict(processes=False, progress=False, output=OutputSpec(cog=False), precision="float64")
    full = decompress_scene(store, tmp_path / "full.tif", **kw)
    win = decompress_scene(store, tmp_path / "win.tif", window=(40, 70, 150, 100), **kw)
    with rasterio.open(full) as f, rasterio.open(win) as w:
        np.testing.assert_array_equal(w.read(), f.read()[:, 70:170, 40:190])
        np.testing.assert_array_equal(w.dataset_mask(), f.dataset_mask()[70:170, 40:190])
    with rasterio.open(src) as a, rasterio.open(full) as f:
        np.testing.assert_array_equal(f.dataset_mask(), a.dataset_mask())


def test_the_halo_is_a_stored_setting(halo_store, tmp_path):
    src, store = halo_store
    assert store_info(store)["halo"] == 1
    ts = TileStore.open(store)
    from geocompress.codec import TileCodec

    assert TileCodec.header(ts.read_string(1, 1)).halo == 1
    with pytest.raises(Exception, match="halo"):
        compress_scene(src, store, **TINY, halo=0)  # resuming with another halo is refused


def test_a_tile_with_no_neighbours_codes_as_if_alone(tmp_path):
    """At the scene's edge the window ends (geocompress.scene.halo): a one-tile scene coded with
    a halo is exactly the tile coded alone."""
    src = write_scene(tmp_path / "one.tif", natural_tile(64, 64, seed=3))
    kw = dict(processes=False, progress=False, output=OutputSpec(cog=False), precision="float64")
    outs = []
    for halo in (0, 2):
        store = tmp_path / f"h{halo}.zarr"
        compress_scene(src, store, **TINY, halo=halo, precision="float64")
        with rasterio.open(decompress_scene(store, tmp_path / f"h{halo}.tif", **kw)) as f:
            outs.append(f.read())
    np.testing.assert_array_equal(outs[0], outs[1])
    assert TileStore.open(tmp_path / "h2.zarr").codec_meta["config"]["halo_edges"] == "truncate"


def test_codec_sides_match_the_context_given_and_are_checked():
    from geocompress.codec import CodecError, load_codec

    codec = load_codec("mbt2018-mean", pretrained=False, N=16, M=24, precision="float64")
    tile = natural_tile(64, 64, seed=5)
    framed = np.pad(tile, ((0, 0), (0, 16), (16, 0)), mode="reflect")  # bottom and left context
    h, lat = codec.decode_latents(codec.encode([framed], halo=1, sides=[(0, 1, 1, 0)]))
    assert lat[0][0].shape[-2:] == (4, 4) and h[0].halo == 1 and (h[0].height, h[0].width) == (64, 64)
    alone = codec.decode_latents(codec.encode([tile], halo=1, sides=[(0, 0, 0, 0)]))[1]
    torch = pytest.importorskip("torch")
    assert torch.equal(alone[0][0], codec.decode_latents(codec.encode([tile]))[1][0][0])
    with pytest.raises(CodecError, match="sides"):
        codec.encode([framed], halo=1, sides=[(0, 2, 1, 0)])  # more context than the halo
    with pytest.raises(CodecError, match="context"):
        codec.encode([framed], halo=1, sides=[(1, 1, 1, 1)])  # not what the array holds


def test_stores_written_before_the_edge_rule_decode_with_replicated_edges(tmp_path, monkeypatch):
    """A halo store without ``halo_edges`` (written before it existed) keeps its old decoding:
    edge-replicated windows; it still decodes regions as crops of the whole."""
    import geocompress.scene.compress as comp
    from geocompress.scene.halo import store_edges

    old_meta = comp._codec_meta

    def without_rule(*a, **k):
        meta = old_meta(*a, **k)
        meta["config"].pop("halo_edges", None)
        return meta

    monkeypatch.setattr(comp, "_codec_meta", without_rule)
    src = write_scene(tmp_path / "s.tif", natural_tile(128, 128, seed=8))
    store = tmp_path / "old.zarr"
    compress_scene(src, store, **TINY, halo=1, precision="float64")
    monkeypatch.setattr(comp, "_codec_meta", old_meta)
    assert store_edges(TileStore.open(store).codec_meta["config"]) == "replicate"
    kw = dict(processes=False, progress=False, output=OutputSpec(cog=False), precision="float64")
    full = decompress_scene(store, tmp_path / "full.tif", **kw)
    win = decompress_scene(store, tmp_path / "win.tif", window=(10, 20, 100, 90), **kw)
    with rasterio.open(full) as f, rasterio.open(win) as w:
        np.testing.assert_array_equal(w.read(), f.read()[:, 20:110, 10:110])
    new = tmp_path / "new.zarr"
    compress_scene(src, new, **TINY, halo=1, precision="float64")
    with rasterio.open(full) as f, rasterio.open(decompress_scene(new, tmp_path / "n.tif", **kw)) as n:
        assert not np.array_equal(f.read(), n.read())  # the edge tiles differ between the rules
    with pytest.raises(ValueError, match="halo_edges"):
        store_edges({"halo_edges": "mirror"})


def test_a_prior_file_replaces_only_its_tensors_and_checks_its_base(tmp_path):
    import torch

    from geocompress.codec import WeightsError
    from geocompress.codec.weights import (load_checkpoint, load_with_delta, save_checkpoint,
                                           save_prior_delta, state_digest, untrained)
    from geocompress.training.halo_prior import PRIOR_PARTS

    base = untrained("mbt2018-mean", N=16, M=24)
    base_digest = save_checkpoint(base, tmp_path / "base.pt")
    model = load_checkpoint(tmp_path / "base.pt")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(PRIOR_PARTS):
                p.add_(0.01)
    save_prior_delta(model, tmp_path / "prior.pt", base_digest, PRIOR_PARTS)
    got = load_with_delta(tmp_path / "base.pt", base_digest, tmp_path / "prior.pt")
    ref = load_checkpoint(tmp_path / "base.pt").state_dict()
    params = {n for n, _ in got.named_parameters()}
    for name, t in got.state_dict().items():
        if not name.startswith(PRIOR_PARTS):
            assert torch.equal(t, ref[name]), name  # the transforms are the base's, bit for bit
        elif name in params:
            assert not torch.equal(t, ref[name]), name
    assert state_digest(got.state_dict()) != base_digest
    save_prior_delta(model, tmp_path / "other.pt", "f" * 64, PRIOR_PARTS)
    with pytest.raises(WeightsError, match="refits"):
        load_with_delta(tmp_path / "base.pt", base_digest, tmp_path / "other.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a prior")
    with pytest.raises(WeightsError, match="damaged"):
        load_with_delta(tmp_path / "base.pt", base_digest, tmp_path / "bad.pt")


def test_auto_halo_uses_the_shipped_halo_prior_and_decodes_by_digest(tmp_path):
    """Default (``auto``): halo 2 where the quality ships a halo prior, else 0; the store records
    the prior's digest and decodes with it; a resumed store keeps its own halo."""
    from geocompress.codec.weights import shipped_halo_prior, shipped_index
    from geocompress.scene.halo import DEFAULT_HALO, resolve_halo

    qualities = shipped_index().get("mgssnet", {}).get("qualities", {})
    with_prior = [int(q) for q, e in qualities.items() if e.get("halo_prior")]
    without = [int(q) for q, e in qualities.items() if not e.get("halo_prior")]
    if not with_prior:
        pytest.skip("no halo prior shipped")
    q = with_prior[0]
    assert resolve_halo("auto", "mgssnet", q, True, None) == DEFAULT_HALO
    assert resolve_halo("auto", "mgssnet", q, True, "x.pt") == 0
    assert resolve_halo("auto", "mgssnet", q, True, None, stored=0) == 0
    assert resolve_halo("3", "mgssnet", q, True, None) == 3
    if without:
        assert resolve_halo("auto", "mgssnet", without[0], True, None) == 0
    with pytest.raises(ValueError, match="halo"):
        resolve_halo(-1, "mgssnet", q, True, None)

    data = natural_tile(128, 192, seed=21)
    src = write_scene(tmp_path / "s.tif", data)
    store = tmp_path / "auto.zarr"
    compress_scene(src, store, arch="mgssnet", quality=q, tile=64, processes=False, progress=False)
    ts = TileStore.open(store)
    assert store_info(store)["halo"] == DEFAULT_HALO
    assert ts.codec_meta["weights_digest"] == shipped_halo_prior("mgssnet", q)[1]
    alone = tmp_path / "alone.zarr"
    compress_scene(src, alone, arch="mgssnet", quality=q, tile=64, processes=False, progress=False, halo=0)
    psnr = {}
    for name, st in (("halo", store), ("alone", alone)):
        out = decompress_scene(st, tmp_path / f"{name}.tif", processes=False, progress=False,
                               output=OutputSpec(cog=False))
        with rasterio.open(out) as f:
            psnr[name] = 10 * np.log10(255 ** 2 / np.mean((f.read().astype(float) - data) ** 2))
    assert psnr["halo"] > psnr["alone"] - 0.3, psnr  # the prior's decoder is the same synthesis
    compress_scene(src, store, arch="mgssnet", quality=q, tile=64, processes=False, progress=False)  # resumes


def test_a_refitted_halo_prior_keeps_the_one_it_replaced_for_old_stores():
    """Stores record the digest of the weights that wrote them: after a refit, a store written
    with the previous prior must still find it (and load exactly those weights)."""
    from geocompress.codec.weights import load_shipped, shipped_index, state_digest

    for q, e in shipped_index().get("mgssnet", {}).get("qualities", {}).items():
        for old in e.get("halo_prior_superseded", []):
            model, _ = load_shipped("mgssnet", int(q), digest=old["digest"])
            assert state_digest(model.state_dict()) == old["digest"]
            assert old["digest"] != e["halo_prior"]["digest"]
            current, _ = load_shipped("mgssnet", int(q), halo_prior=True)
            assert state_digest(current.state_dict()) == e["halo_prior"]["digest"]
            return
    pytest.skip("no superseded halo prior ships")


def test_fitting_a_halo_prior_lowers_its_rate_and_leaves_the_transforms():
    import torch

    from geocompress.codec.weights import untrained
    from geocompress.training.halo_prior import (HaloPriorConfig, fit_halo_prior,
                                                 interior_latents, rate_bpp, windows)

    model = untrained("mbt2018", N=16, M=24).float().eval()
    tiles = np.stack([natural_tile(128, 128, seed=s) for s in range(4)])
    lat = interior_latents(model, tiles)
    assert lat.shape == (8, 24, 8, 8)  # each tile and its transpose
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = windows(lat, 4, 16, np.random.default_rng(5))
    with torch.no_grad():
        r0 = float(rate_bpp(model, probe))
    hist = fit_halo_prior(model, lat, lat, HaloPriorConfig(steps=60, sizes=(4,), lr=1e-3,
                                                           val_every=30), log=lambda s: None)
    with torch.no_grad():
        assert float(rate_bpp(model, probe)) < r0
    assert [h["step"] for h in hist] == [0, 30, 60]
    for k, v in model.state_dict().items():
        if k.startswith(("g_a.", "g_s.")):
            assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="window"):
        windows(lat, 8, 1, np.random.default_rng(0), margin=2)


def test_a_variable_rate_halo_prior_fits_every_level_and_travels_beside_its_checkpoint(tmp_path):
    """A variable-rate checkpoint's halo prior (``<stem>-halo.pt`` beside it): fitted on gained
    windows at levels over the whole scale, validated per level, picked by ``--halo auto`` only
    while it refits those very weights, and a store written with it decodes by its digest."""
    import torch

    from geocompress.codec import load_codec
    from geocompress.codec.weights import (checkpoint_halo_prior, load_with_delta,
                                           save_checkpoint, save_prior_delta, state_digest,
                                           untrained)
    from geocompress.scene.halo import DEFAULT_HALO, resolve_halo
    from geocompress.training.halo_prior import (PRIOR_PARTS, HaloPriorConfig, fit_halo_prior,
                                                 gained, interior_latents, rate_bpp, windows)

    from .conftest import SMALL

    model = untrained("mgssnet-vr", **SMALL["mgssnet-vr"]).float().eval()
    top = model.levels - 1
    with torch.no_grad():  # gains spread as trained ones are (an untrained trunk's are not)
        steps = torch.linspace(0.0, 6.0, model.levels)[:, None]
        model.log_gain.copy_(steps.expand_as(model.log_gain))
        model.log_inverse_gain.copy_(-steps.expand_as(model.log_inverse_gain))
    tiles = np.stack([natural_tile(128, 128, seed=s) for s in range(3)])
    lat = interior_latents(model, tiles)
    model.set_rate(float(top))
    with torch.no_grad():  # ungained: the model's analysis at a level is these times its gain
        y = model.g_a(torch.from_numpy(tiles[:1].astype(np.float32) / 255))
        torch.testing.assert_close(gained(model, lat[:1], torch.tensor([float(top)])), y)
    probe = windows(lat, 4, 12, np.random.default_rng(3))
    low = torch.zeros(len(probe))
    with torch.no_grad():
        r0 = float(rate_bpp(model, gained(model, probe, low)))
    base = tmp_path / "vr.pt"
    base_digest = save_checkpoint(model, base)
    gains = model.log_gain.detach().clone()
    cfg = HaloPriorConfig(steps=40, sizes=(4,), lr=1e-3, val_every=20, val_levels=(0, top))
    hist = fit_halo_prior(model, lat, lat, cfg, log=lambda s: None)
    assert [h["step"] for h in hist] == [0, 20, 40]
    assert set(hist[0]) == {"step", "val_bpp_4_L0", f"val_bpp_4_L{top}"}
    assert hist[0][f"val_bpp_4_L{top}"] > hist[0]["val_bpp_4_L0"]  # more level, more bits
    with torch.no_grad():
        assert float(rate_bpp(model, gained(model, probe, low))) < r0  # the low end learns too
    assert torch.equal(model.log_gain, gains)  # the gains are the transforms', not the prior's
    with pytest.raises(ValueError, match="refits"):
        fit_halo_prior(model, lat, lat, HaloPriorConfig(steps=1, parts=("g_s.",), val_levels=(0,)),
                       log=print)

    assert resolve_halo("auto", "mgssnet-vr", None, False, str(base)) == 0  # no prior beside it
    save_prior_delta(model, tmp_path / "vr-halo.pt", base_digest, PRIOR_PARTS)
    assert checkpoint_halo_prior(base) == (tmp_path / "vr-halo.pt", base_digest)
    assert resolve_halo("auto", "mgssnet-vr", None, False, str(base)) == DEFAULT_HALO
    prior_digest = state_digest(load_with_delta(base, base_digest, tmp_path / "vr-halo.pt").state_dict())
    assert load_codec(checkpoint=str(base), halo_prior=True).digest == prior_digest
    assert load_codec(checkpoint=str(base)).digest == base_digest

    data = natural_tile(128, 128, seed=21)
    src = write_scene(tmp_path / "s.tif", data)
    store = tmp_path / "vr.zarr"
    kw = dict(processes=False, progress=False)
    compress_scene(src, store, checkpoint=str(base), quality=1.5, tile=64, precision="float64", **kw)
    assert store_info(store)["halo"] == DEFAULT_HALO
    assert TileStore.open(store).codec_meta["weights_digest"] == prior_digest
    out = decompress_scene(store, tmp_path / "o.tif", checkpoint=str(base),
                           output=OutputSpec(cog=False), precision="float64", **kw)
    with rasterio.open(out) as f:
        assert f.read().shape == data.shape

    # other weights beside an old prior: auto codes without a halo, the old store is refused
    import shutil

    from geocompress.codec import WeightsMismatchError

    other = untrained("mgssnet-vr", **SMALL["mgssnet-vr"])
    with torch.no_grad():
        other.log_gain.add_(0.1)
    save_checkpoint(other, tmp_path / "new.pt")
    shutil.copy(tmp_path / "vr-halo.pt", tmp_path / "new-halo.pt")
    assert checkpoint_halo_prior(tmp_path / "new.pt") is None
    assert resolve_halo("auto", "mgssnet-vr", None, False, str(tmp_path / "new.pt")) == 0
    with pytest.raises(WeightsMismatchError, match="checkpoint"):
        decompress_scene(store, tmp_path / "o2.tif", checkpoint=str(tmp_path / "new.pt"),
                         output=OutputSpec(cog=False), precision="float64", **kw)
    with pytest.warns(UserWarning, match="no halo prior"):  # asked for: coded, and said
        compress_scene(src, tmp_path / "h1.zarr", checkpoint=str(tmp_path / "new.pt"), halo=1,
                       quality=1.5, tile=64, **kw)
    from geocompress.codec.weights import drop_stale_halo_prior

    assert drop_stale_halo_prior(base) is None and (tmp_path / "vr-halo.pt").exists()
    assert drop_stale_halo_prior(tmp_path / "new.pt") == tmp_path / "new-halo.pt"
    assert not (tmp_path / "new-halo.pt").exists()
    (tmp_path / "new-halo.pt").write_bytes(b"not a prior")  # damaged: said, and not used
    with pytest.warns(UserWarning, match="damaged"):
        assert resolve_halo("auto", "mgssnet-vr", None, False, str(tmp_path / "new.pt")) == 0


def test_a_checkpoint_prior_refitted_on_the_same_weights_keeps_decoding_its_stores(tmp_path):
    """Refitting a checkpoint's prior replaced ``<stem>-halo.pt`` in place: a store written
    with the old prior then failed its digest, with advice to pass the very checkpoint it had."""
    import torch

    from geocompress.codec import load_codec
    from geocompress.codec.weights import (keep_replaced_halo_prior, save_checkpoint,
                                           save_prior_delta, untrained)
    from geocompress.training.halo_prior import PRIOR_PARTS

    from .conftest import SMALL

    model = untrained("mgssnet-vr", **SMALL["mgssnet-vr"]).float().eval()
    base = tmp_path / "vr.pt"
    base_digest = save_checkpoint(model, base)
    assert keep_replaced_halo_prior(base) is None  # nothing there yet
    prior = tmp_path / "vr-halo.pt"
    save_prior_delta(model, prior, base_digest, PRIOR_PARTS)
    old = load_codec(checkpoint=str(base), quality=2.5, halo_prior=True, precision="float64")
    tiles = [natural_tile(64, 64, seed=3)]
    strings = old.encode(tiles)
    before = old.decode(strings)[0]
    kept = keep_replaced_halo_prior(base)
    assert kept == tmp_path / f"vr-halo-{old.digest[:12]}.pt" and not prior.exists()
    with torch.no_grad():
        model.h_s[0].weight.mul_(1.01)
    save_prior_delta(model, prior, base_digest, PRIOR_PARTS)  # the refit
    new = load_codec(checkpoint=str(base), quality=2.5, halo_prior=True, precision="float64")
    assert new.digest != old.digest
    again = load_codec(checkpoint=str(base), quality=2.5, digest=old.digest, precision="float64")
    assert again.digest == old.digest
    np.testing.assert_array_equal(again.decode(strings)[0], before)
    assert load_codec(checkpoint=str(base), quality=2.5, digest=new.digest).digest == new.digest
    other = untrained("mgssnet-vr", **SMALL["mgssnet-vr"])
    with torch.no_grad():
        other.log_gain.add_(0.1)
    save_checkpoint(other, base)  # other weights: their old prior refits nothing, none is kept
    assert keep_replaced_halo_prior(base) is None and prior.exists()
