"""pipelines/gpu_check.py, the first GPU's prepared check (issue 38), runs on the CPU with tiny
sizes: every stage, its JSON, its table, and the catalog writer (GPU runs only)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from geocompress.shipped import DEFAULT_ARCH

from .conftest import pipeline_script

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu_and_strings_decode_identically_across_runs(tmp_path: Path, capsys) -> None:
    gc = pipeline_script("gpu_check")
    out = tmp_path / "gpu_check.json"
    gc.main(["--device", "cpu", "--tiles", "2", "--batches", "1", "2", "--cross-tiles", "2",
             "--scene", "512", "--out", str(out), "--work-dir", str(tmp_path)])
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["script"] == "pipelines/gpu_check.py"
    assert res["weights"].startswith(f"{DEFAULT_ARCH} ")  # what users get
    tp = res["throughput"]
    assert tp["tiles"] == 2 and [r["batch"] for r in tp["rows"]] == [1, 2]
    for r in tp["rows"]:
        for k in ("encode", "decode"):
            assert r[f"{k}_tiles_s"] > 0 and r[f"{k}_mpx_s"] > 0
            assert r[f"{k}_busy_pct"] == "n/a"  # no GPU: no busy share, said so
        assert 0 < r["bpp"] < 8
    cd = res["cross_device"]
    assert cd["mode"].startswith("cpu <-> cpu") and cd["precision"] == "float64"
    assert cd["sides"][0]["batch"] != cd["sides"][1]["batch"]
    assert cd["sides"][0]["threads"] != cd["sides"][1]["threads"]
    assert cd["cpu-a_encoded_cpu-b_decoded_latents_identical"] is True
    assert cd["cpu-a_encoded_cpu-b_decoded_pixels_identical"] is True
    assert cd["cpu-b_encoded_cpu-a_decoded_latents_identical"] is True
    assert cd["cpu-b_encoded_cpu-a_decoded_pixels_identical"] is True
    assert cd["identical"] is True
    sc = res["scene"]
    assert "error" not in sc and sc["size"] == 512 and sc["tiles"] == 4
    assert sc["output_shape"] == [3, 512, 512]
    assert sc["compress_s"] > 0 and sc["decompress_s"] > 0 and 0 < sc["bpp"] < 8
    printed = capsys.readouterr().out
    assert "| batch | encode tiles/s" in printed and "no CUDA device" in printed

    # the catalog takes a GPU run's figures only, replacing its row and its own section
    catalog = tmp_path / "benchmarks.md"
    shutil.copy(REPO / "catalogs" / "benchmarks.md", catalog)
    before = catalog.read_text()
    with pytest.raises(SystemExit, match="only a GPU run"):
        gc.main(["--catalog", str(out), "--catalog-file", str(catalog)])
    assert catalog.read_text() == before
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({**res, "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}))
    for _ in range(2):  # a second run replaces, not appends
        gc.main(["--catalog", str(gpu), "--catalog-file", str(catalog)])
        text = catalog.read_text()
        assert text.count(gc.BEGIN) == 1 and text.count("| `pipelines/gpu_check.py`") == 1
        assert "| `gpu_codec.py`" not in text and "NVIDIA H100 80GB HBM3" in text
