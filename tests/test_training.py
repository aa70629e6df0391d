"""Dataset builder and trainer on tiny inputs: shapes, splits, filtering, loss falls, exact
resume, and an exported checkpoint that the codec loads and round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import pytest
import rasterio
import zarr
from affine import Affine
from PIL import Image

from geocompress.training import EpochSampler, SceneSource, TileDataset, build_dataset
from geocompress.training.lambdas import COMPRESSAI, PAPER, compressai_to_paper, paper_to_compressai
from geocompress.training.radiometry import Stretch, band_selection
from geocompress.training.splits import assign_blocks, assign_stratified

T = 64  # tile size of the synthetic datasets (the real one uses 256)


def _texture(h: int, w: int, c: int, seed: int, peak: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    bands = [0.5 + 0.3 * np.sin(xx / (5 + b)) * np.cos(yy / (7 + b)) + 0.1 * rng.standard_normal((h, w))
             for b in range(c)]
    return (np.clip(np.stack(bands), 0, 1) * peak).round()


def _write_tif(path: Path, data: np.ndarray, nodata: float | None = None) -> Path:
    c, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=data.dtype,
                       crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4_000_000),
                       nodata=nodata) as ds:
        ds.write(data)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("src")
    # 8-bit RGB, 10 x 12 tiles of 64 plus a partial edge (which must not be used)
    rgb = _write_tif(d / "rgb.tif", _texture(10 * T + 20, 12 * T + 30, 3, 0, 255).astype(np.uint8))
    # 16-bit single band with a nodata border: left 2 tile columns nodata, one tile constant
    pan = _texture(8 * T, 8 * T, 1, 1, 4000).astype(np.uint16) + 100
    pan[:, :, : 2 * T - 5] = 0
    pan[:, 3 * T:4 * T, 5 * T:6 * T] = 777
    pan_path = _write_tif(d / "pan16.tif", pan, nodata=0)
    imgs = d / "classes"
    for k, cls in enumerate(("farm", "port")):
        (imgs / cls).mkdir(parents=True)
        for i in range(20):
            h = T if i % 5 else T - 7  # some smaller than a tile: padded
            arr = _texture(h, T + (4 if i == 3 else 0), 3, 100 * k + i, 255).astype(np.uint8)
            Image.fromarray(arr.transpose(1, 2, 0)).save(imgs / cls / f"{cls}{i:02d}.png")
    return {"rgb": rgb, "pan": pan_path, "imgs": imgs}


@pytest.fixture(scope="module")
def store(sources, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "tiny.zarr"
    build_dataset(out, scenes=[sources["rgb"], sources["pan"]], image_folders=[sources["imgs"]],
                  seed=3, tile=T, block=2, catalog_dir=out.parent / "catalog")
    return out


def test_store_layout_and_counts(store: Path) -> None:
    root = zarr.open_group(store, mode="r")
    n = root["images"].shape[0]
    assert root["images"].shape == (n, 3, T, T) and root["images"].dtype == np.uint8
    assert root["images"].chunks == (1, 3, T, T)
    # rgb: 10 x 12 full tiles; pan: 8 x 8 minus 2 nodata columns (16) minus 1 constant; 40 images
    assert n == 120 + (64 - 16 - 1) + 40
    attrs = root.attrs.asdict()
    rgb, pan, imgs = attrs["sources"]
    assert rgb["crs_wkt"] and len(rgb["transform"]) == 6
    assert pan["stretch"] is not None and pan["dropped"] == {"nodata": 16, "constant": 1}
    assert attrs["classes"] == ["farm", "port"]
    src, win = root["source"][:], root["window"][:]
    assert win[src == 0].max(axis=0).tolist() == [9 * T, 11 * T]  # no partial edge tiles
    assert (win[src == 1][:, 1] >= 2 * T).all()  # nothing from the nodata columns
    assert set(root["class"][src == 2].tolist()) == {0, 1} and (root["class"][src < 2] == -1).all()
    catalog = (store.parent / "catalog" / "tiny.json").read_text()
    assert '"farm"' in catalog and (store.parent / "catalog" / "tiny.md").exists()


def test_splits_ratio_blocks_and_determinism(store: Path, sources, tmp_path: Path) -> None:
    root = zarr.open_group(store, mode="r")
    split, src, block = root["split"][:], root["source"][:], root["block"][:]
    sites = [s["site"] for s in root.attrs["sources"][:2]]
    scene = block >= 0
    frac = np.bincount(split[scene], minlength=3) / scene.sum()
    assert np.allclose(frac, [0.8, 0.1, 0.1], atol=0.06)
    keys = [(sites[s], b) for s, b in zip(src[scene], block[scene])]
    owner: dict = {}
    for k, s in zip(keys, split[scene]):
        assert owner.setdefault(k, s) == s, f"block {k} is in two splits"
    klass = root["class"][:]
    for c in (0, 1):
        assert np.bincount(split[klass == c], minlength=3).tolist() == [16, 2, 2]
    again = tmp_path / "again.zarr"
    build_dataset(again, scenes=[sources["rgb"], sources["pan"]], image_folders=[sources["imgs"]],
                  seed=3, tile=T, block=2)
    r2 = zarr.open_group(again, mode="r")
    assert np.array_equal(r2["split"][:], split) and np.array_equal(r2["images"][:], root["images"][:])
    other = tmp_path / "other.zarr"
    build_dataset(other, scenes=[sources["rgb"]], image_folders=[sources["imgs"]], seed=4, tile=T, block=2)
    assert not np.array_equal(zarr.open_group(other)["split"][:120], split[:120])


def test_overlapping_scenes_share_blocks(sources, tmp_path: Path) -> None:
    """Two dates of one place: tiles over the same ground must land in the same split."""
    out = tmp_path / "two_dates.zarr"
    build_dataset(out, scenes=[SceneSource.of(sources["rgb"], "date1"),
                               SceneSource.of(sources["rgb"], "date2")], seed=0, tile=T, block=2)
    root = zarr.open_group(out, mode="r")
    src, split = root["source"][:], root["split"][:]
    assert np.array_equal(split[src == 0], split[src == 1])


def test_split_helpers() -> None:
    blocks = assign_blocks({("a", i): 4 for i in range(50)}, seed=1)
    assert np.bincount(list(blocks.values()), minlength=3).tolist() == [40, 5, 5]
    names = [f"x{i}" for i in range(30)]
    s = assign_stratified(names, "c", seed=2)
    assert s == assign_stratified(names, "c", seed=2) and sorted(np.bincount(s)) == [3, 3, 24]
    assert band_selection(1) == [1, 1, 1] and band_selection(4) == [1, 2, 3]
    st = Stretch((100.0,), (4100.0,))
    assert st.apply(np.array([[[0, 100, 2100, 4100, 9000]]])).tolist() == [[[0, 0, 128, 255, 255]]]


def test_tile_dataset_crops_and_sampler(store: Path) -> None:
    train = TileDataset(store, "train", crop=32)
    test = TileDataset(store, "test", crop=None)
    x = train[(0, 123)]
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert np.array_equal(train[(0, 123)].numpy(), x.numpy())  # augmentation is seeded
    assert test[0].shape == (3, T, T) and not test.augment
    s = EpochSampler(10, seed=5)
    full = list(s)
    s.set_epoch(0, 4)
    assert list(s) == full[4:]
    s.set_epoch(1)
    assert list(s) != full


def test_restretch_keeps_each_band_s_structure_and_is_seeded(store: Path) -> None:
    from geocompress.training.data import restretch

    rng = np.random.default_rng(0)
    x = np.stack([np.linspace(0, 1, 64 * 64).reshape(64, 64) ** (k + 1) for k in range(3)])
    y = restretch(x, np.random.default_rng(7))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert np.array_equal(y, restretch(x, np.random.default_rng(7)))
    # every output band is a monotone (non-decreasing) map of one input band: orders agree
    order = np.argsort(x[0].ravel(), kind="stable")  # all three input bands share this order
    for band in y:
        assert np.all(np.diff(band.ravel()[order]) >= -1e-12)
    assert not np.allclose(y, x) and not np.allclose(restretch(x, rng), y)
    plain = TileDataset(store, "train", crop=32)
    always = TileDataset(store, "train", crop=32, stretch=1.0)
    a, b = plain[(0, 5)].numpy(), always[(0, 5)].numpy()
    assert a.shape == b.shape and not np.allclose(a, b)
    assert np.array_equal(always[(0, 5)].numpy(), b)  # seeded like the crops and flips
    assert TileDataset(store, "test", crop=None, stretch=1.0).stretch == 0  # evaluation is never stretched
    with pytest.raises(ValueError, match="probability"):
        TileDataset(store, "train", stretch=2.0)


def test_lambda_tables() -> None:
    assert len(PAPER) == 7 and COMPRESSAI[1] == 0.0018
    for lam in PAPER:
        assert compressai_to_paper(paper_to_compressai(lam)) == pytest.approx(lam)


TINY = {"N": 16, "M": 24}  # mbt2018-mean: the cheapest model with the full two-optimizer setup


def _train(store: Path, out: Path, **kw):
    from geocompress.training import train

    args = dict(arch="mbt2018-mean", config=TINY, dataset=store, lmbda=0.01, steps=12, batch=4,
                crop=64, lr=3e-3, val_every=6, val_limit=2, progress=False, seed=1)
    return train(out_dir=out, **{**args, **kw})


def test_train_loss_falls_resume_is_exact_and_export_loads(store: Path, tmp_path: Path) -> None:
    from geocompress.codec import load_codec

    full = _train(store, tmp_path / "full")
    assert full.finished and len(full.losses) == 12
    assert np.mean(full.losses[-3:]) < 0.7 * np.mean(full.losses[:3])
    part = _train(store, tmp_path / "split", halt_after=5)
    assert not part.finished and part.checkpoint is None
    rest = _train(store, tmp_path / "split")
    assert part.losses + rest.losses == full.losses  # bit-exact continuation
    assert (tmp_path / "split" / "curves.png").exists()
    log = (tmp_path / "split" / "log.csv").read_text().splitlines()
    assert sum(",train," in r for r in log) == 12 and sum(",val," in r for r in log) == 2
    warm = _train(store, tmp_path / "warm", warm_start=full.state_path, steps=1, export=False,
                  lr_override=1e-5)
    assert (tmp_path / "warm" / "log.csv").read_text().splitlines()[1].split(",")[8] == "1e-05"
    assert warm.losses[0] < 0.5 * full.losses[0]  # starts from the trained weights
    lineage = torch.load(warm.state_path, weights_only=False)["hparams"]["warm_start"]
    assert lineage["steps"] == 12 and lineage["lambda"] == 0.01  # catalogs can say where it came from
    assert lineage["lr_schedule"] == [{"from_step": 1, "to_step": 12, "lr": 3e-3}]  # and at what lr
    chain = _train(store, tmp_path / "chain", warm_start=warm.state_path, steps=1, export=False)
    assert torch.load(chain.state_path, weights_only=False)["hparams"]["warm_start"]["lr_schedule"] == [
        {"from_step": 1, "to_step": 12, "lr": 3e-3}, {"from_step": 13, "to_step": 13, "lr": 1e-5}]
    # from an inference checkpoint (no Adam moments) the lr ramps up, and a resume keeps the ramp
    kw = dict(warm_start=full.checkpoint, steps=6, export=False, lr_override=1e-3, warmup_steps=4)
    ramp = _train(store, tmp_path / "ramp", **kw)
    lrs = [float(r.split(",")[8]) for r in (tmp_path / "ramp" / "log.csv").read_text().splitlines()[1:]
           if ",train," in r]
    assert lrs == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    from geocompress.codec import load_checkpoint
    from geocompress.training.checkpoints import export_state

    _, meta, _ = export_state(ramp.state_path, tmp_path / "ramp.pt", quality=1)
    assert meta["lr_schedule"] == [{"from_step": 1, "to_step": 4, "lr": pytest.approx(1e-3),
                                    "ramp_from": pytest.approx(2.5e-4)},
                                   {"from_step": 5, "to_step": 6, "lr": pytest.approx(1e-3)}]
    assert load_checkpoint(full.checkpoint).meta["lr_schedule"] == [
        {"from_step": 1, "to_step": 12, "lr": 3e-3}]  # the export at a run's end says it too
    assert meta["warm_start"]["lr_schedule"] == [{"from_step": 1, "to_step": 12, "lr": 3e-3}]
    assert meta["warm_start"]["path"] == "model.pt" and meta["total_steps"] == 18
    part = _train(store, tmp_path / "ramp-split", halt_after=2, **kw)
    rest = _train(store, tmp_path / "ramp-split", **{**kw, "warm_start": None})
    assert part.losses + rest.losses == ramp.losses
    codec = load_codec(checkpoint=str(full.checkpoint))
    assert codec.digest == full.digest
    tile = TileDataset(store, "test", crop=None).pixels(0)
    strings, recon = codec.encode_with_reconstruction(tile[None])
    back = codec.decode(strings)[0]
    assert back.shape == tile.shape and np.array_equal(back, recon[0])


def test_mixed_quantization_trains_resumes_exactly_and_stays_with_the_run(store: Path, tmp_path: Path) -> None:
    from tests.conftest import SMALL

    kw = dict(arch="mbt2018", config=SMALL["mbt2018"], steps=8, val_every=4, export=False)
    full = _train(store, tmp_path / "full", quantization="mixed", **kw)
    assert np.mean(full.losses[-2:]) < np.mean(full.losses[:2])
    part = _train(store, tmp_path / "split", quantization="mixed", halt_after=3, **kw)
    rest = _train(store, tmp_path / "split", **kw)  # resumed without saying: keeps its own mode
    assert part.losses + rest.losses == full.losses
    assert torch.load(rest.state_path, weights_only=False)["hparams"]["quantization"] == "mixed"
    with pytest.raises(ValueError, match="unknown quantization"):
        _train(store, tmp_path / "bad", quantization="ste", **kw)
    # a noise run switched to mixed: its plateau scheduler starts over (the losses differ in kind)
    noise = _train(store, tmp_path / "switch", **{**kw, "steps": 4})
    state = torch.load(noise.state_path, weights_only=False)
    state["sched"]["best"] = state["best_val"] = -1.0  # a noise loss no mixed loss could beat
    torch.save(state, noise.state_path)
    switched = _train(store, tmp_path / "switch", quantization="mixed", **kw)
    state = torch.load(switched.state_path, weights_only=False)
    assert state["hparams"]["quantization"] == "mixed"
    assert state["sched"]["best"] == state["best_val"] == switched.val["loss"]
    # band stretches (same batches, other pixels): resumes exactly and keeps its probability
    sfull = _train(store, tmp_path / "sfull", stretch=0.5, **{**kw, "steps": 6})
    spart = _train(store, tmp_path / "ssplit", stretch=0.5, halt_after=2, **{**kw, "steps": 6})
    srest = _train(store, tmp_path / "ssplit", **{**kw, "steps": 6})
    assert spart.losses + srest.losses == sfull.losses and sfull.losses[:4] != noise.losses
    assert torch.load(srest.state_path, weights_only=False)["hparams"]["stretch"] == 0.5


@pytest.mark.parametrize("arch", ["mgssnet", "bmshj2018-factorized", "bmshj2018-hyperprior",
                                  "mbt2018", "cheng2020-attn", "bmshj2018-factorized-lgcm"])
def test_every_architecture_trains(store: Path, tmp_path: Path, arch: str) -> None:
    from tests.conftest import SMALL

    r = _train(store, tmp_path / arch, arch=arch, config=SMALL[arch], steps=1, val_every=1,
               val_limit=1, export=False)
    assert r.finished and all(np.isfinite(r.losses)) and r.val is not None


def test_inherited_schedule_numbers_the_chain_and_shows_unrecorded_links() -> None:
    from geocompress.training.lr_history import describe, inherited

    own = [{"from_step": 1, "to_step": 50, "lr": 1e-4}, {"from_step": 51, "to_step": 90, "lr": 5e-5}]
    assert inherited(own, 60, None) == [{"from_step": 1, "to_step": 50, "lr": 1e-4},
                                        {"from_step": 51, "to_step": 60, "lr": 5e-5}]
    grand = {"steps": 100, "lr_schedule": [{"from_step": 1, "to_step": 100, "lr": 5e-4}]}
    assert describe(inherited(own, 90, grand)) == "1-100: 0.0005; 101-150: 0.0001; 151-190: 5e-05"
    assert describe(inherited(own, 90, {"steps": 100})) == "101-150: 0.0001; 151-190: 5e-05"  # a gap


def test_lr_segments_record_ramp_overrides_and_halvings() -> None:
    from geocompress.training.lr_history import describe, lr_segments

    lrs = [1e-4, 2e-4, 3e-4, 4e-4, 4e-4, 4e-4, 2e-4, 2e-4, 1e-4, 2.5e-4]  # ramp, plateau halving,
    rows = [{"step": i + 1, "phase": "train", "lr": lr} for i, lr in enumerate(lrs)]  # a new session
    rows.insert(6, {"step": 6, "phase": "val", "lr": 2e-4})  # val rows carry the lr after the step
    segs = lr_segments(rows)
    assert [(s["from_step"], s["to_step"], s["lr"], s.get("ramp_from")) for s in segs] == [
        (1, 4, 4e-4, 1e-4), (5, 6, 4e-4, None), (7, 8, 2e-4, None), (9, 9, 1e-4, None),
        (10, 10, 2.5e-4, None)]
    assert describe(segs) == "1-4: ramp to 0.0004; 5-6: 0.0004; 7-8: 0.0002; 9: 0.0001; 10: 0.00025"
    assert lr_segments([]) == []


def test_settle_quantiles_fits_the_bottleneck_without_touching_the_transforms() -> None:
    from geocompress.models import build
    from geocompress.training.checkpoints import settle_quantiles

    torch.manual_seed(0)
    model = build("mbt2018-mean", N=16, M=24)
    with torch.no_grad():  # a density the quantiles have not followed, as after a short run
        model.entropy_bottleneck.quantiles.add_(3.0)
    before = float(model.aux_loss())
    weights = {k: v.clone() for k, v in model.state_dict().items() if "quantiles" not in k}
    after = settle_quantiles(model)
    assert before > 100 and after < 1e-2
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    assert all(p.requires_grad for p in model.parameters())


def test_shipped_weights_match_their_index() -> None:
    """Every shipped checkpoint loads with its catalogued digest and stays under 15 MB (a
    variable-rate model, one file for every rate, under 40 MB)."""
    from geocompress.codec import load_checkpoint
    from geocompress.codec.weights import (is_variable_rate_entry, load_shipped, shipped_index, shipped_path,
                                           state_digest)

    everything = shipped_index()
    if not everything.get("mgssnet"):
        pytest.skip("no shipped MGSSNet weights in this checkout")
    assert len(everything["mgssnet"]["qualities"]) >= 4
    for arch, index in everything.items():  # MGSSNet and any budget winner shipped beside it
        if is_variable_rate_entry(index):
            path, level, digest = shipped_path(arch, None)
            model = load_checkpoint(path, expected_digest=digest)
            assert path.stat().st_size <= 40 * 1024 * 1024 and model.arch == arch
            assert model.levels == index["levels"] and 0 <= level == index["default"] <= model.levels - 1
            for d in [e["digest"] for e in [index.get("halo_prior") or {}, *index.get("superseded", [])] if e]:
                assert state_digest(load_shipped(arch, None, digest=d)[0].state_dict()) == d
            continue
        qualities = sorted(int(q) for q in index["qualities"])
        assert index["default"] in qualities
        for q in qualities:
            path, _, digest = shipped_path(arch, q)
            assert path.stat().st_size <= 15 * 1024 * 1024
            model = load_checkpoint(path, expected_digest=digest)
            assert model.meta["quality"] == q and model.meta["lambda"] > 0 and model.arch == arch


def test_shipped_quality_codes_a_real_tile_and_unknown_quality_is_refused() -> None:
    """The user's path: ``load_codec(quality=q)`` -> bytes -> pixels, on a test-split-like tile."""
    import geocompress
    from geocompress.codec import WeightsError
    from geocompress.codec.weights import shipped_index

    index = shipped_index().get("mgssnet")
    if not index:
        pytest.skip("no shipped MGSSNet weights in this checkout")
    codec = geocompress.load_codec("mgssnet")  # the default quality
    assert codec.quality == index["default"]
    yy, xx = np.mgrid[0:64, 0:96]
    tile = np.stack([(128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 5.0)).astype(np.uint8)] * 3)
    strings, recon = codec.encode_with_reconstruction(tile[None])
    back = codec.decode(strings)[0]
    assert np.array_equal(back, recon[0])
    from geocompress.metrics import psnr
    assert psnr(tile, back) > 20
    # trained weights through the exact entropy path: batch size changes no byte
    pair = np.stack([tile, tile[:, ::-1, ::-1]])
    one = geocompress.load_codec("mgssnet", batch_size=1).encode(pair)
    assert [bytes(s) for s in one] == [bytes(s) for s in codec.encode(pair)]
    with pytest.raises(WeightsError, match="no shipped quality"):
        geocompress.load_codec("mgssnet", quality=99)


def test_pack_trains_like_its_store(store: Path, tmp_path: Path) -> None:
    """A GPU box gets a JPEG pack of train/val instead of the store: same tiles, same order."""
    from geocompress.training import open_tiles
    from geocompress.training.pack import pack_splits

    pack = pack_splits(store, tmp_path / "p.npz")
    with pytest.raises(ValueError, match="test split"):
        pack_splits(store, tmp_path / "q.npz", splits=("train", "test"))
    for split in ("train", "val"):
        a, b = TileDataset(store, split, crop=None), open_tiles(pack, split, crop=None)
        assert len(a) == len(b) and np.array_equal(a.indices, b.indices)
        for i in range(len(a)):
            err = a.pixels(i).astype(float) - b.pixels(i)
            assert 10 * np.log10(255 ** 2 / max(np.mean(err ** 2), 1e-9)) > 35  # JPEG q95
    a, b = TileDataset(store, "train", crop=32), open_tiles(pack, "train", crop=32)
    assert a[(0, 7)].shape == b[(0, 7)].shape == (3, 32, 32)
    from geocompress.training import train

    r = train("mbt2018-mean", TINY, pack, 0.01, tmp_path / "run", steps=4, batch=2, crop=64,
              val_limit=1, progress=False, export=False)
    assert r.finished and all(np.isfinite(r.losses))


def test_train_qualities_more_min_adds_time_to_each_run_where_it_stands(tmp_path: Path, monkeypatch) -> None:
    """Unevenly trained runs continue by equal added minutes; the polish phase stacks on top."""
    import subprocess

    from .conftest import pipeline_script

    tq = pipeline_script("train_qualities")
    runs = tmp_path / "runs"
    walls = {1: 600.0, 3: 1800.0}  # q2 and q4 do not exist yet
    for q, w in walls.items():
        (runs / f"q{q}").mkdir(parents=True)
        torch.save({"wall_s": w}, runs / f"q{q}" / tq.STATE)
    launched: list[list[str]] = []

    class Done:
        def __init__(self, cmd, **_):
            launched.append(cmd)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Done)
    tq.main(["--runs", str(runs), "--base-min", "0", "--more-min", "10", "--polish-min", "5",
             "--branch-lr", "5e-4"])
    targets = {(c[c.index("--phase") + 1], int(c[c.index("--only") + 1])): float(c[c.index("--target-s") + 1])
               for c in launched}
    assert len(launched) == 8
    for q in (1, 2, 3, 4):
        start = walls.get(q, 0.0)
        assert targets["branch", q] == start + 600
        assert targets["polish", q] == start + 900
    assert all(float(c[c.index("--branch-lr") + 1]) == 5e-4 for c in launched)
    assert not any("--quantization" in c for c in launched)  # not asked for: each run keeps its own

    # each child trains at its phase's lr: --branch-lr in the branch, --polish-lr in the polish
    lrs: dict[str, tuple] = {}
    monkeypatch.setattr(tq, "train_one", lambda *a: lrs.__setitem__(phase, a[-3:]))
    for phase in ("branch", "polish"):
        tq.main(["--runs", str(runs), "--only", "2", "--phase", phase, "--target-s", "60",
                 "--branch-lr", "5e-4", "--polish-lr", "1e-4", "--quantization", "mixed",
                 "--stretch", "0.25"])
    assert lrs == {"branch": (5e-4, "mixed", 0.25), "polish": (1e-4, "mixed", 0.25)}
    assert not any("--stretch" in c for c in launched)  # likewise the stretch augmentation


def test_the_recipe_is_one_value_and_unknown_options_are_named():
    from geocompress.training.config import TrainConfig

    r = TrainConfig(steps=10, crop=128)
    assert r.replace(lr=5e-4).lr == 5e-4 and r.replace(lr=5e-4).crop == 128 and r.lr == 1e-4
    with pytest.raises(TypeError, match=r"unknown training option\(s\) \['stpes'\]"):
        r.replace(stpes=3)


def test_every_shipped_architecture_codes_a_tile() -> None:
    """``--arch`` choices with shipped weights (budget winners) work through the real codec."""
    import geocompress
    from geocompress.codec.weights import shipped_index
    from geocompress.metrics import psnr

    others = [a for a in shipped_index() if a != "mgssnet"]
    if not others:
        pytest.skip("only MGSSNet is shipped")
    yy, xx = np.mgrid[0:64, 0:64]
    tile = np.stack([(128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 5.0)).astype(np.uint8)] * 3)
    for arch in others:
        codec = geocompress.load_codec(arch)
        back = codec.decode(codec.encode(tile[None]))[0]
        assert back.shape == tile.shape and psnr(tile, back) > 15, arch


def test_lr_multipliers_scale_each_entry_s_update_until_their_step(store: Path, tmp_path: Path) -> None:
    """Entry-wise learning rates (the entries a widening added learn faster): with factor 0 an
    entry stays where it was, with factor 1 it moves exactly as without multipliers, and after
    ``lr_multipliers_until`` every entry moves as without."""
    import torch

    from geocompress.models import build

    init = tmp_path / "init.pt"
    torch.manual_seed(3)
    m = build("mbt2018-mean", **TINY)
    torch.save({"arch": "mbt2018-mean", "config": TINY, "state_dict": m.state_dict()}, init)
    name = "g_a.0.weight"
    mult = torch.ones_like(m.state_dict()[name])
    mult[:4] = 0.0  # the first four output channels: frozen by their factor
    kw = dict(steps=1, val_every=100, export=False, warm_start=init, warmup_steps=0)
    plain = _train(store, tmp_path / "plain", **kw)
    boosted = _train(store, tmp_path / "boost", lr_multipliers={name: mult}, lr_multipliers_until=1, **kw)
    late = _train(store, tmp_path / "late", lr_multipliers={name: mult}, lr_multipliers_until=0, **kw)

    def weight(r):
        return torch.load(r.state_path, map_location="cpu", weights_only=False)["model"][name]

    w0 = m.state_dict()[name]
    assert torch.equal(weight(boosted)[:4], w0[:4]) and not torch.equal(weight(plain)[:4], w0[:4])
    torch.testing.assert_close(weight(boosted)[4:], weight(plain)[4:])
    assert torch.equal(weight(late), weight(plain))
    with pytest.raises(ValueError, match="no parameter named"):
        _train(store, tmp_path / "typo", lr_multipliers={"g_a.99.weight": mult}, lr_multipliers_until=2, **kw)


def test_weight_average_is_validated_resumed_exactly_and_exported(store: Path, tmp_path: Path) -> None:
    """A run with a weight average logs its validation beside the live weights', resumes it
    bit-exactly (also when resumed without naming it), and exports it instead of the live
    weights, from the run's end and from its state alike."""
    from geocompress.training.checkpoints import export_state

    kw = dict(ema=0.5, steps=6, val_every=3)
    full = _train(store, tmp_path / "full", **kw)
    part = _train(store, tmp_path / "split", halt_after=2, **kw)
    rest = _train(store, tmp_path / "split", steps=6, val_every=3)  # keeps its own average
    assert part.losses + rest.losses == full.losses
    a, b = (torch.load(r.state_path, map_location="cpu", weights_only=False) for r in (full, rest))
    assert a["hparams"]["ema"] == b["hparams"]["ema"] == 0.5 and a["ema"]["updates"] == 6
    name = "g_a.0.weight"
    avg, live = a["ema"]["params"][name], a["model"][name]
    assert torch.equal(avg, b["ema"]["params"][name]) and not torch.allclose(avg, live)
    phases = [line.split(",")[2] for line in (tmp_path / "full" / "log.csv").read_text().splitlines()[1:]]
    assert phases.count("ema") == phases.count("val") == 2
    exported = torch.load(full.checkpoint, map_location="cpu", weights_only=False)
    assert torch.equal(exported["state_dict"][name].float(), avg.half().float())
    assert exported["meta"]["ema"] == {"decay": 0.5, "updates": 6}
    _, meta, model = export_state(full.state_path, tmp_path / "from-state.pt", 1)
    assert torch.equal(model.state_dict()[name], avg) and meta["ema"]["updates"] == 6
    plain = _train(store, tmp_path / "plain", steps=2, val_every=100, export=False)
    state = torch.load(plain.state_path, map_location="cpu", weights_only=False)
    assert state["ema"] is None and state["hparams"]["ema"] == 0.0
    with pytest.raises(ValueError, match="decay"):
        _train(store, tmp_path / "absurd", ema=1.5, steps=1)


def test_weight_average_follows_its_decay_swaps_back_and_refuses_a_foreign_state() -> None:
    from geocompress.training.ema import WeightAverage

    m = torch.nn.Linear(3, 2)
    w0 = m.weight.detach().clone()
    ema = WeightAverage(m, 0.9)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.state_dict()["params"]["weight"], w0 + 0.1)
    with pytest.raises(RuntimeError), ema.applied():
        torch.testing.assert_close(m.weight.detach(), w0 + 0.1)
        raise RuntimeError("validation failed")
    torch.testing.assert_close(m.weight.detach(), w0 + 1.0)  # the live weights are back
    resumed = WeightAverage(m, 0.99, ema.state_dict())
    assert resumed.updates == 1 and torch.equal(resumed.avg[0], ema.avg[0])
    with pytest.raises(ValueError, match="does not match"):
        WeightAverage(torch.nn.Linear(3, 4), 0.9, ema.state_dict())
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="decay"):
            WeightAverage(m, bad)


@pytest.mark.parametrize("decay", ["1.5", "1", "nan", "-0.1", "x"])
def test_an_absurd_weight_average_decay_is_refused_before_a_run_folder_exists(tmp_path, capsys, decay):
    from geocompress.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", str(tmp_path / "ds.zarr"), str(tmp_path / "run"), "--arch", "mgssnet-vr", "--ema", decay])
    assert e.value.code == 2 and "--ema" in capsys.readouterr().err and not (tmp_path / "run").exists()
