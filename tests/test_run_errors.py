"""How runs end when the output's folder is missing, the disk fills or a tile is damaged: one
line naming what went wrong, exit code 1 (issue 36, 'Messages that confuse')."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from geocompress.cli import main

from .conftest import natural_tile
from .test_scene import write_scene

CLI_TINY = ["--quiet", "--untrained", "--tile", "64", "--shard", "2", "--halo", "0"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("src") / "s.tif", natural_tile(256, 256, seed=5))


def _one_error_line(err: str, command: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"geocompress {command}: error: "), err
    return lines[0]


def test_compress_refuses_missing_parent_folder_like_decompress(source, tmp_path, capsys):
    """compress created missing parent folders of its store while decompress refused a missing
    folder of its output: both now refuse, naming the folder, before any work."""
    missing = tmp_path / "no" / "such"
    assert main(["compress", str(source), str(missing / "s.zarr"), *CLI_TINY]) == 1
    line = _one_error_line(capsys.readouterr().err, "compress")
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "no").exists()  # nothing created
    store = tmp_path / "s.zarr"
    assert main(["compress", str(source), str(store), *CLI_TINY]) == 0
    capsys.readouterr()
    assert main(["decompress", str(store), str(missing / "o.tif"), "--quiet"]) == 1
    line = _one_error_line(capsys.readouterr().err, "decompress")
    assert str(missing) in line and "does not exist" in line


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_compress_disk_full_is_one_line_and_resumes(source, tmp_path, capsys, monkeypatch):
    """A full disk while writing the store ends in one line naming the store, exit 1; the
    blocks written before stay, and rerunning the command resumes (issue 36)."""
    from geocompress.store import TileStore

    store = tmp_path / "s.zarr"
    real, calls = TileStore.write_block, []

    def fills_up(self, *a, **kw):  # the first shard block fits, the second finds the disk full
        calls.append(1)
        if len(calls) > 1:
            _no_space()
        return real(self, *a, **kw)

    monkeypatch.setattr(TileStore, "write_block", fills_up)
    assert main(["compress", str(source), str(store), *CLI_TINY]) == 1
    line = _one_error_line(capsys.readouterr().err, "compress")
    assert str(store) in line and "no space left on device" in line, line
    monkeypatch.setattr(TileStore, "write_block", real)
    assert main(["compress", str(source), str(store), *CLI_TINY]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["blocks_resumed"] == 1 and summary["blocks_done"] == 3


def test_decompress_disk_full_is_one_line(source, tmp_path, capsys, monkeypatch):
    """A full disk while writing the output ends in one line naming the output, exit 1, and
    leaves no file or temporary behind."""
    from rasterio.io import DatasetWriter

    store = tmp_path / "s.zarr"
    assert main(["compress", str(source), str(store), *CLI_TINY]) == 0
    capsys.readouterr()
    out = tmp_path / "out" / "o.tif"
    out.parent.mkdir()
    monkeypatch.setattr(DatasetWriter, "write", _no_space)
    assert main(["decompress", str(store), str(out), "--quiet"]) == 1
    line = _one_error_line(capsys.readouterr().err, "decompress")
    assert str(out) in line and "no space left on device" in line, line
    assert not list(out.parent.iterdir())
