"""pipelines/device_vr.py, the variable-rate run's continuation on a borrowed GPU
(``device_train.sh run``), runs its Python part on the CPU: warm start from the committed wip
weights, the recipe of train_vr.py, an export in export_wip.py's format, and the adoption here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .conftest import pipeline_script

REPO = Path(__file__).resolve().parents[1]


def _pack(path: Path, n: dict[str, int], tile: int = 128) -> Path:
    """A pack in geocompress.training.pack's layout, of smooth synthetic tiles."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:tile, 0:tile]
    arrays = {}
    for split, k in n.items():
        blobs = []
        for i in range(k):
            img = 128 + 60 * np.sin(xx / (5 + i)) * np.cos(yy / (7 + i)) + rng.normal(0, 8, (3, tile, tile))
            buf = io.BytesIO()
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)).save(buf, "JPEG", quality=85)
            blobs.append(buf.getvalue())
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        arrays[f"{split}_index"] = np.arange(k, dtype=np.int64)
    np.savez(path, tile=np.int64(tile), quality=np.int64(85), source=np.array("synthetic"), **arrays)
    return path


def test_device_vr_continues_the_wip_weights_exports_like_export_wip_and_adopts(tmp_path: Path) -> None:
    dv = pipeline_script("device_vr")
    pack = _pack(tmp_path / "p.npz", {"train": 4, "val": 2})
    out = tmp_path / "out"
    note = dv.main(["--steps", "2", "--minutes", "0", "--batch", "2", "--device", "cpu", "--threads", "1",
                    "--data", str(pack), f"{pack}*3", "--run", str(tmp_path / "run"), "--out", str(out)])
    ckpt = torch.load(out / "mgssnet-vr.pt", map_location="cpu", weights_only=False)
    wip = torch.load(REPO / "catalogs" / "models" / "wip" / "mgssnet-vr.pt", map_location="cpu",
                     weights_only=False)
    meta, parent = ckpt["meta"], wip["meta"]
    assert ckpt["meta"]["arch"] == "mgssnet-vr"
    # export_wip's format: fp16 weights, the same tensors and dtypes as the committed file (whose
    # transforms are widened to the run's width where they are still the narrow trunk's)
    assert {k: v.dtype for k, v in ckpt["state_dict"].items()} == {k: v.dtype for k, v in wip["state_dict"].items()}
    assert torch.float16 in {v.dtype for v in ckpt["state_dict"].values()}
    assert meta["steps"] == 2 and meta["total_steps"] == parent["total_steps"] + 2
    assert meta["crop"] == 128 and meta["lr"] == dv.LR and meta["quantization"] == "mixed" and meta["stretch"] == 0.25
    start = Path(meta["warm_start"]["path"]).name
    assert (start == "mgssnet-vr.pt" or start.startswith("widened-")) and meta["level_lambdas"]
    # the run's trunk: transforms and latent of CONFIG's widths, its levels, every parameter training
    assert ckpt["state_dict"]["g_a.0.weight"].shape[0] == dv.CONFIG["transform_N"]
    assert ckpt["state_dict"]["log_gain"].shape == (dv.CONFIG["levels"], dv.CONFIG["M"])
    assert ckpt["config"]["transform_N"] == dv.CONFIG["transform_N"] and ckpt["config"]["M"] == dv.CONFIG["M"]
    assert len(meta["level_lambdas"]) == dv.CONFIG["levels"]
    saved = json.loads((out / "mgssnet-vr.json").read_text())
    assert saved == json.loads(json.dumps(note, default=float))
    assert note["this_call"]["steps"] == 2 and note["this_call"]["freeze"] == []
    assert note["vr"]["own_steps"] == 2 and dv.CONFIG.items() <= note["vr"]["config"].items()
    assert set(note["vr"]) >= {"file", "digest", "lambda", "config", "own_steps", "total_steps", "wall_s",
                               "hardware", "level_lambdas"}
    # adoption here: the file and its wip.json entry
    dest = tmp_path / "wip"
    dest.mkdir()
    (dest / "wip.json").write_text(json.dumps({"q6": {"file": "mgssnet-q6.pt"}}))
    dv.adopt(out, dest)
    assert (dest / "mgssnet-vr.pt").read_bytes() == (out / "mgssnet-vr.pt").read_bytes()
    record = json.loads((dest / "wip.json").read_text())
    assert record["q6"] == {"file": "mgssnet-q6.pt"} and record["vr"] == saved["vr"]


def test_the_learning_curve_keeps_earlier_machines_rows_and_adds_this_runs(tmp_path: Path, monkeypatch) -> None:
    """A run warm-started on a new machine counts its own steps from 0: its rows join the table
    after the lineage's earlier ones (steps in all from wip.json), with a column for a new level."""
    tv = pipeline_script("train_vr")
    (tmp_path / "catalogs" / "models" / "wip").mkdir(parents=True)
    (tmp_path / "run").mkdir()
    doc = tmp_path / "catalogs" / "models" / "mgssnet-vr.md"
    doc.write_text(f"intro\n{tv.CURVE_BEGIN}\n\n| own step | steps in all | wall h | level 0 (lambda 0.0001125) |\n"
                   f"|---|---|---|---|\n| 40000 | 119064 | 10.33 | 0.028 / 22.24 |\n"
                   f"| 44000 | 123064 | 11.00 | 0.027 / 22.30 |\n\n{tv.CURVE_END}\noutro\n")
    (tmp_path / "catalogs" / "models" / "wip" / "wip.json").write_text(
        json.dumps({"vr": {"own_steps": 2000, "total_steps": 123403}}))
    head = "step,phase,wall_s,loss,bpp,mse,psnr\n"
    (tmp_path / "run" / "log.csv").write_text(
        head + "".join(f"{s},{p}@q{q},3600,1,0.{q + 1},0,2{q}.5\n" for s in (1000, 2000)
                       for p in ("val", "ema") for q in (0, 13)))
    monkeypatch.setattr(tv, "REPO", tmp_path)
    monkeypatch.setattr(tv, "RUN", tmp_path / "run")
    monkeypatch.setattr(tv, "WIP", tmp_path / "catalogs" / "models" / "wip")
    tv.write_curve()
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith(f"{tv.CURVE_END}\noutro\n")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "own step" not in line]
    assert "level 13 (lambda 0.72)" in text and "44000" not in text  # rows from the new run's start on replaced
    assert rows[0] == "| 40000 | 119064 | 10.33 | 0.028 / 22.24 | - |"
    assert rows[1:] == ["| 2000 (from 121403) | 123403 | 1.00 | 0.100 / 20.50 | 0.140 / 213.50 |",
                        "| 2000 (from 121403), weight average | 123403 | 1.00 | 0.100 / 20.50 | 0.140 / 213.50 |"]
