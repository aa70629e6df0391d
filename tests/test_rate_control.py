"""Rate control: a target bpp or PSNR instead of a level, found through the real codec.

What a user relies on: the scene lands near the target, what was asked and what was chosen are
recorded in the store and its STAC item, a resumed run keeps the chosen level, and every target
that cannot be met (fixed-rate weights, out of the model's reach, nonsense) is one clear error
before anything is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from geocompress.codec.tile_codec import TileCodec
from geocompress.codec.weights import save_checkpoint, untrained
from geocompress.scene.rate_control import Extent, RateTarget, RateTargetError, choose_level

from .conftest import SMALL, natural_tile
from .test_scene import write_scene


def _spread_model():
    m = untrained("mgssnet-vr", **SMALL["mgssnet-vr"])
    with torch.no_grad():
        steps = torch.linspace(0.0, 6.0, m.levels)[:, None]
        m.log_gain.copy_(steps.expand_as(m.log_gain))
        m.log_inverse_gain.copy_(-steps.expand_as(m.log_inverse_gain))
    return m


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("vr") / "vr.pt"
    save_checkpoint(_spread_model(), path)
    return path


@pytest.mark.parametrize("kw", [{}, {"bpp": 0.5, "psnr": 30.0}, {"bpp": -0.1}, {"bpp": 0.0},
                                {"psnr": math.nan}, {"bpp": math.inf}, {"bpp": True},
                                {"bpp": "0.5"}, {"bpp": 0.5, "sample": 0}])
def test_a_target_must_be_one_finite_positive_number(kw):
    with pytest.raises(RateTargetError):
        RateTarget(**kw)


def test_a_numpy_target_is_a_number_and_is_kept_as_one():
    t = RateTarget(bpp=np.float32(0.5), sample=np.int64(4))
    assert (t.bpp, t.sample) == (0.5, 4) and type(t.bpp) is float and type(t.sample) is int
    with pytest.raises(RateTargetError):
        RateTarget(psnr=np.bool_(True))


def test_a_quality_and_a_rate_target_together_are_refused_before_any_work(checkpoint, tmp_path):
    """The CLI refuses both; the API coded at the searched level and dropped the quality."""
    from geocompress.scene import compress_scene

    with pytest.raises(ValueError, match="not both"):
        compress_scene(tmp_path / "absent.tif", tmp_path / "s.zarr", checkpoint=str(checkpoint),
                       quality=7, rate=RateTarget(bpp=0.3))
    assert not (tmp_path / "s.zarr").exists()


def test_the_search_meets_a_reachable_bpp_and_refuses_an_unreachable_one():
    codec = TileCodec(_spread_model(), quality=0.0, precision="float64")
    tiles = [natural_tile(64, 64, seed=s) for s in range(4)]
    masks = [np.ones(t.shape[1:], bool) for t in tiles]
    args = dict(extent=Extent(coded_fraction=1.0, grid_cells=4, scene_pixels=4 * 64 * 64))
    with pytest.raises(RateTargetError, match="outside") as e:
        choose_level(codec, tiles, masks, 8, RateTarget(bpp=1e-4), **args)
    reach = [float(v) for v in str(e.value).split(": ")[1].split(" bpp")[0].split(" .. ")]
    target = math.sqrt(reach[0] * reach[1])
    got = choose_level(codec, tiles, masks, 8, RateTarget(bpp=target), **args)
    assert 0 < got.level < 8 and codec.rate == got.level
    real = sum(map(len, codec.encode(tiles))) * 8 / (4 * 64 * 64)
    assert real == pytest.approx(got.estimated_bpp, abs=1e-4) and abs(real / target - 1) < 0.1


def test_the_search_meets_a_psnr_with_trained_weights():
    """An untrained synthesis gives the same PSNR at every level: the PSNR search needs the
    committed variable-rate weights."""
    from geocompress import load_codec

    from .conftest import REPO

    wip = REPO / "catalogs" / "models" / "wip" / "mgssnet-vr.pt"
    if not wip.exists():
        pytest.skip("no variable-rate weights in this checkout")
    codec = load_codec(checkpoint=str(wip), precision="float32")
    tiles = [natural_tile(64, 64, seed=s) for s in range(3)]
    masks = [np.ones(t.shape[1:], bool) for t in tiles]
    args = dict(extent=Extent(coded_fraction=1.0, grid_cells=3, scene_pixels=3 * 64 * 64))
    with pytest.raises(RateTargetError, match="outside") as e:
        choose_level(codec, tiles, masks, 8, RateTarget(psnr=99.0), **args)
    lo, hi = (float(v) for v in str(e.value).split(": ")[1].split(" dB")[0].split(" .. "))
    target = (lo + hi) / 2
    got = choose_level(codec, tiles, masks, 8, RateTarget(psnr=target), **args)
    assert abs(got.sample_psnr - target) < 0.1 and 0 < got.level < 8


def test_fixed_rate_weights_cannot_aim_at_a_rate(small_codecs):
    tile = natural_tile(64, 64)
    with pytest.raises(RateTargetError, match="variable-rate"):
        choose_level(small_codecs("mbt2018-mean"), [tile], [np.ones((64, 64), bool)], 8,
                     RateTarget(bpp=0.5), Extent(coded_fraction=1.0, grid_cells=1, scene_pixels=64 * 64))


def test_scene_at_a_target_bpp_records_it_and_resumes_at_the_same_level(checkpoint, tmp_path):
    from geocompress.scene import compress_scene, decompress_scene
    from geocompress.store import StoreMismatchError, TileStore

    data = natural_tile(128, 192, seed=5)
    data[data == 0] = 1
    data[:, :64, :64] = 0  # one nodata tile: costs no bits, counts in the scene's pixels
    src = write_scene(tmp_path / "s.tif", data, nodata=0)
    kw = dict(arch="mgssnet-vr", checkpoint=str(checkpoint), processes=False, progress=False,
              tile=64, shard=2, halo=0)
    store = tmp_path / "s.zarr"
    probe = compress_scene(src, tmp_path / "probe.zarr", quality=4.0, **kw)
    target = round(probe.bpp * 1.3, 4)
    r = compress_scene(src, store, rate=RateTarget(bpp=target), **kw)
    assert abs(r.bpp / target - 1) < 0.05, (r.bpp, target, r.rate_control)
    assert r.rate_control["target"] == "bpp" and r.rate_control["level"] == r.quality
    assert r.bpp == pytest.approx(r.tile_bytes * 8 / (128 * 192), abs=1e-4)
    ts = TileStore.open(store, "r")
    assert ts.codec_meta["quality"] == r.quality
    assert ts.codec_meta["config"]["rate_control"]["value"] == target
    from geocompress.store.stac import stac_item_path

    item = json.loads(stac_item_path(store).read_text())
    assert item["properties"]["geocompress:bpp"] == r.bpp
    assert item["properties"]["geocompress:rate_control"]["level"] == r.quality
    again = compress_scene(src, store, rate=RateTarget(bpp=target), **kw)  # resumes: same level
    assert again.quality == r.quality and again.blocks_resumed > 0
    hint = rf"to resume it ask for its target \(--target-bpp {target:g}\)"
    with pytest.raises(StoreMismatchError, match=hint):  # the level found is not what was asked
        compress_scene(src, store, rate=RateTarget(bpp=target * 2), **kw)
    with pytest.raises(StoreMismatchError, match=hint):  # its own level, without its target
        compress_scene(src, store, quality=r.quality, **kw)
    out = decompress_scene(store, tmp_path / "s_out.tif", processes=False, progress=False,
                           checkpoint=str(checkpoint))
    assert out.exists()


def test_a_halo_coded_scene_is_searched_as_it_is_coded(checkpoint, tmp_path):
    """A halo-coded tile costs other bytes than the same tile alone: the search codes its sample
    with the halo (and each tile's context at the grid's edges), so its estimate is the scene's
    bytes when the sample holds every tile."""
    from geocompress.scene import compress_scene

    data = natural_tile(128, 192, seed=6)
    src = write_scene(tmp_path / "s.tif", data)
    kw = dict(arch="mgssnet-vr", checkpoint=str(checkpoint), processes=False, progress=False,
              tile=64, shard=2, halo=1, precision="float64")
    probe = compress_scene(src, tmp_path / "probe.zarr", quality=4.0, **kw)
    alone = compress_scene(src, tmp_path / "alone.zarr", quality=4.0, **{**kw, "halo": 0})
    assert probe.bpp != alone.bpp
    r = compress_scene(src, tmp_path / "s.zarr", rate=RateTarget(bpp=probe.bpp), **kw)
    assert r.rate_control["sample_tiles"] == 6
    assert r.rate_control["estimated_bpp"] == pytest.approx(r.bpp, rel=1e-3), (r.rate_control, r.bpp)
    assert abs(r.bpp / probe.bpp - 1) < 0.05
    # and its PSNR is the halo decode's: the tiles drawn with their neighbours' latents
    import rasterio

    from geocompress.scene import decompress_scene

    out = decompress_scene(tmp_path / "s.zarr", tmp_path / "out.tif", processes=False,
                           progress=False, checkpoint=str(checkpoint), precision="float64")
    with rasterio.open(out) as f:
        mse = np.mean((f.read().astype(float) - data) ** 2)
    assert r.rate_control["sample_psnr"] == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=0.05)


def test_cli_refuses_a_rate_target_it_cannot_meet_before_any_work(tmp_path, capsys):
    from geocompress.cli import main

    src = write_scene(tmp_path / "s.tif", natural_tile(64, 64, seed=1))
    with pytest.raises(SystemExit) as e:
        main(["compress", str(src), str(tmp_path / "a.zarr"), "--target-bpp", "-1"])
    assert e.value.code == 2
    rc = main(["compress", str(src), str(tmp_path / "b.zarr"), "--target-bpp", "0.5",
               "--arch", "mgssnet", "--untrained", "--workers", "1"])
    assert rc == 1 and "variable-rate" in capsys.readouterr().err
    assert not (tmp_path / "b.zarr").exists()


def test_a_psnr_target_lands_on_a_halo_coded_scene_with_trained_weights(tmp_path):
    """With trained weights a tile's edges drawn without its neighbours' latents lose about a dB
    (its edge latents are interior ones): the search draws them as the halo decode does."""
    import rasterio

    from geocompress.scene import compress_scene, decompress_scene, store_info

    from .conftest import REPO

    wip = REPO / "catalogs" / "models" / "wip" / "mgssnet-vr.pt"
    if not (wip.exists() and wip.with_name("mgssnet-vr-halo.pt").exists()):
        pytest.skip("no variable-rate weights with a halo prior in this checkout")
    data = np.concatenate([natural_tile(128, 192, seed=s) for s in (7, 8)], axis=1)
    src = write_scene(tmp_path / "s.tif", data)
    kw = dict(arch="mgssnet-vr", checkpoint=str(wip), processes=False, progress=False, tile=64,
              shard=2, precision="float32")

    def psnr(store):
        out = decompress_scene(store, store.with_name(store.stem + "-out.tif"), processes=False, progress=False,
                               checkpoint=str(wip), precision="float32")
        with rasterio.open(out) as f:
            return 10 * np.log10(255 ** 2 / np.mean((f.read().astype(float) - data) ** 2))

    probe = compress_scene(src, tmp_path / "probe.zarr", quality=6.0, **kw)
    assert store_info(tmp_path / "probe.zarr")["halo"] == 2  # the prior beside the weights
    target = round(psnr(tmp_path / "probe.zarr") - 0.5, 2)
    r = compress_scene(src, tmp_path / "s.zarr", rate=RateTarget(psnr=target), **kw)
    assert abs(psnr(tmp_path / "s.zarr") - target) < 0.2, (r.rate_control, probe.bpp)
