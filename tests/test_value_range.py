"""Value ranges: each band's valid values over the scene map to the model's 0 .. 1 (format 5)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from geocompress.codec import CodecError
from geocompress.codec.errors import CorruptStreamError
from geocompress.codec.format import RANGE_VERSION, read_header, unpack
from geocompress.metrics import psnr
from geocompress.scene import compress_scene, decompress_scene
from geocompress.scene.value_range import coded_ranges, merge_ranges, within_range
from geocompress.store import StoreIntegrityError, TileStore

from .conftest import natural_tile
from .test_scene import TINY, write_scene


def dim_u16(h: int = 128, w: int = 128, c: int = 2, seed: int = 0) -> np.ndarray:
    """12-bit data that fills a tenth of its bit depth, each band its own stretch (as Sentinel-2
    reflectances do)."""
    x = natural_tile(h, w, c=c, dtype=np.uint8, seed=seed).astype(np.int64)
    return np.stack([900 + 130 * b + x[b] * (300 + 100 * b) // 255 for b in range(c)]).astype(np.uint16)


def test_ranges_round_trip_in_the_header_and_bound_the_decoded_values(small_codecs):
    codec = small_codecs("mbt2018-mean")
    tile = dim_u16(64, 64)
    ranges = [(int(b.min()), int(b.max())) for b in tile]
    s = codec.encode([tile], bits=12, ranges=ranges)[0]
    h = read_header(s)[0]
    assert h.version == RANGE_VERSION and h.ranges == tuple(ranges) and h.rate is None
    out = codec.decode([s])[0]
    assert out.dtype == np.uint16
    for b, (lo, hi) in enumerate(ranges):
        assert lo <= out[b].min() and out[b].max() <= hi
    plain = codec.encode([tile], bits=12)[0]  # without ranges: format 3, as before
    assert read_header(plain)[0].version == 3 and read_header(plain)[0].ranges is None


def test_a_variable_rate_string_keeps_its_rate_beside_the_ranges(small_codecs):
    codec = small_codecs("mgssnet-vr")
    tile = dim_u16(64, 64, c=3)
    codec.set_level(2.5)
    s = codec.encode([tile], bits=12, ranges=[(int(b.min()), int(b.max())) for b in tile])[0]
    h = read_header(s)[0]
    assert h.version == RANGE_VERSION and h.rate == 2.5
    assert codec.decode([s])[0].shape == tile.shape


@pytest.mark.parametrize("ranges, match", [
    ([(900, 1300)], "2 bands"),                      # one range for two bands
    ([(1000, 900), (900, 1500)], "lo < hi"),         # reversed
    ([(900, 1300), (900, 5000)], "lo < hi"),         # beyond 12 bits
    ([(950, 1300), (900, 1500)], "outside"),         # a value below band 1's lo
])
def test_bad_ranges_are_refused_before_coding(small_codecs, ranges, match):
    tile = dim_u16(64, 64)
    with pytest.raises(CodecError, match=match):
        small_codecs("mbt2018-mean").encode([tile], bits=12, ranges=ranges)


def test_a_header_with_an_impossible_range_is_refused(small_codecs):
    import struct
    import zlib

    tile = dim_u16(64, 64)
    s = bytearray(small_codecs("mbt2018-mean").encode([tile], bits=12,
                                                       ranges=[(900, 1300), (900, 1500)])[0])
    at = s.index(struct.pack("<4H", 900, 1300, 900, 1500))
    s[at:at + 8] = struct.pack("<4H", 1300, 900, 900, 1500)  # lo > hi, checksum recomputed
    s[-4:] = struct.pack("<I", zlib.crc32(bytes(s[:-4])))
    with pytest.raises(CorruptStreamError, match="value range"):
        unpack(bytes(s))


def test_scene_ranges_merge_widen_and_vanish_at_full_scale():
    assert merge_ranges([None, [(5, 9), (0, 3)], [(2, 7), (1, 8)]], 2) == [(2, 9), (0, 8)]
    assert merge_ranges([None], 3) == [(0, 0)] * 3
    assert coded_ranges([(7, 7), (4095, 4095)], 12) == [[7, 8], [4094, 4095]]
    assert coded_ranges([(0, 255)] * 3, 8) is None  # the format of bits, byte for byte
    assert coded_ranges([(3, 200), (0, 255)], 8) == [[3, 200], [0, 255]]
    assert coded_ranges([(20, 255), (0, 250)], 8) is None  # 92 % and 98 % of the depth: kept
    assert coded_ranges([(3, 200), (255, 255)], 8, (False, True)) == [[3, 200], [0, 255]]
    assert coded_ranges([(0, 255), (255, 255)], 8, (False, True)) is None  # RGBA with a mask alpha


def test_nodata_fill_outside_the_range_is_clipped_and_valid_pixels_are_kept():
    tile = np.array([[[0, 1000], [1200, 65535]]], np.uint16)
    valid = np.array([[False, True], [True, False]])
    out = within_range(tile, tile, valid, [(1000, 1200)], (0, 0, 0, 0), 16)
    assert out.tolist() == [[[1000, 1000], [1200, 1200]]]


def test_a_dim_16_bit_scene_codes_better_with_its_ranges(tmp_path):
    data = dim_u16(128, 192)
    data[:, :20, :30] = 0  # nodata fill below every band's range
    src = write_scene(tmp_path / "dim.tif", data, nodata=0)
    valid = data[0] != 0
    got = {}
    for mode in ("bits", "scene"):
        store = tmp_path / f"{mode}.zarr"
        r = compress_scene(src, store, value_range=mode, **TINY)
        assert r.bits == 11
        ts = TileStore.open(store)
        cfg = ts.codec_meta["config"]
        out = decompress_scene(store, tmp_path / f"{mode}.tif", processes=False, progress=False)
        with rasterio.open(out) as d:
            y = d.read()
        if mode == "scene":
            assert cfg["value_range"] == [[int(b[valid].min()), int(b[valid].max())] for b in data]
            assert ts.meta["tile_format_version"] == RANGE_VERSION
        else:
            assert "value_range" not in cfg and ts.meta["tile_format_version"] == 3
        got[mode] = psnr(data[:, valid], y[:, valid], peak=2 ** 11 - 1)
    assert got["scene"] > got["bits"] + 3  # a stretch of ~6x: the untrained model's error shrinks


def test_a_resumed_store_keeps_its_ranges_and_a_foreign_tile_is_refused(tmp_path):
    a = write_scene(tmp_path / "a.tif", dim_u16(64, 128, seed=1))
    b_data = dim_u16(64, 128, seed=1)
    b_data[0] += 50  # other values: other ranges, same shapes
    b = write_scene(tmp_path / "b.tif", b_data)
    compress_scene(a, tmp_path / "a.zarr", **TINY)
    compress_scene(b, tmp_path / "b.zarr", **TINY)
    # resuming with the other mode keeps the store's own (a finished store: nothing to redo)
    again = compress_scene(a, tmp_path / "a.zarr", value_range="scene", **TINY)
    assert again.written == 2
    ta, tb = TileStore.open(tmp_path / "a.zarr", "r+"), TileStore.open(tmp_path / "b.zarr")
    assert ta.codec_meta["config"]["value_range"] != tb.codec_meta["config"]["value_range"]
    # a tile from the other store, checksums rewritten: the store's sealed digest refuses it,
    # and the header check under it (a tile that maps to other values) does too
    from geocompress.scene.mosaic import _check_headers

    strings = np.array([[tb.read_string(0, 0)]], dtype=object)
    with pytest.raises(StoreIntegrityError, match="value range"):
        _check_headers(tmp_path / "a.zarr", ta, strings, slice(0, 1), slice(0, 1), [(0, 0)])
    _check_headers(tmp_path / "a.zarr", ta, np.array([[ta.read_string(0, 0)]], dtype=object),
                   slice(0, 1), slice(0, 1), [(0, 0)])


def test_an_edited_range_in_the_store_is_refused_before_decoding(tmp_path):
    """The ranges decide every decoded value: the store's attribute digest covers them."""
    import json

    src = write_scene(tmp_path / "a.tif", dim_u16(64, 64, seed=2))
    store = tmp_path / "a.zarr"
    compress_scene(src, store, **TINY)
    doc = json.loads((store / "zarr.json").read_text())
    doc["attributes"]["geocompress"]["codec_config"]["value_range"][0][1] += 100
    (store / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreIntegrityError):
        decompress_scene(store, tmp_path / "out.tif", processes=False, progress=False)


def test_rgba_imagery_with_a_mask_alpha_keeps_the_format_it_had(tmp_path):
    """The alpha band is constant over the valid pixels (its range one value), but decode
    rebuilds it from the masks: it does not make the store one of ranges."""
    from rasterio.enums import ColorInterp

    rgb = natural_tile(128, 128, seed=4)
    rgb[:, 0, 0], rgb[:, 1, 1] = 0, 255  # every band spans the whole depth
    alpha = np.full((1, 128, 128), 255, np.uint8)
    alpha[:, :20, :40] = 0
    src = write_scene(tmp_path / "rgba.tif", np.concatenate([rgb, alpha]),
                      colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                   ColorInterp.alpha])
    compress_scene(src, tmp_path / "rgba.zarr", **TINY)
    ts = TileStore.open(tmp_path / "rgba.zarr")
    assert "value_range" not in ts.codec_meta["config"] and ts.meta["tile_format_version"] == 3


def test_bits_below_the_data_are_refused_before_the_store_is_made(tmp_path):
    data = dim_u16(64, 64) + 3000  # up to ~4500: 13 bits
    src = write_scene(tmp_path / "a.tif", data)
    with pytest.raises(ValueError, match="more than bits=12"):
        compress_scene(src, tmp_path / "a.zarr", bits=12, **TINY)
    assert not (tmp_path / "a.zarr").exists()
