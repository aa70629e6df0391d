"""Forged strings with a valid CRC: every header field and stream checked, none may crash or hang.

The fuzzing runs in a child process so that a crash inside the native rANS decoder (a segfault)
fails this test instead of killing the test session."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from geocompress.codec import CodecError, CorruptStreamError
from geocompress.codec.format import TileString, pack, unpack

from .conftest import REPO, natural_tile

FUZZ = textwrap.dedent(r'''
    import dataclasses, random, struct, sys, traceback, zlib
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    import geocompress
    from geocompress.codec import CodecError
    from geocompress.codec.format import TileString, pack, unpack
    from tests.conftest import SMALL, natural_tile

    rng = random.Random(int(sys.argv[2]))

    def crc(body):
        return body + struct.pack("<I", zlib.crc32(body))

    def header_edit(rng, s, h):
        """(field, value, forged string): quality, version (the byte alone, or a downgrade to
        1 / 2 without the halo byte), channel count, declared size, padding or bits."""
        f = rng.choice(["quality", "version", "channels", "height", "width", "pad_h", "pad_w",
                        "bits"])
        if f == "version":
            v = rng.choice([0, 1, 2, 4, 5, 255])
            if v in (1, 2) and rng.randrange(2):  # a faithful downgrade: halo byte removed
                at = 4 + 2 + s[5] + struct.calcsize("<8sBBBHHHHH")
                return f, v, crc(s[:4] + bytes([v]) + s[5:at] + s[at + 1:-4])
            return f, v, crc(s[:4] + bytes([v]) + s[5:-4])
        old = getattr(h, f)
        v = rng.choice([old - 1, old + 1, old - 8, old + 8, old * 2, old // 2, 1, 0,
                        rng.randrange(1, 256 if f in ("quality", "bits") else 4097)])
        v = max(0, min(v, 255 if f in ("quality", "bits") else 65535))
        if v == old:
            return None
        return f, v, pack(TileString(dataclasses.replace(h, **{f: v}), ts_groups(s)))

    def ts_groups(s):
        return unpack(s).groups
    n = int(sys.argv[3])
    fields = ["pad_h", "pad_w", "bits", "channels", "height", "width"]
    bad, edited = [], 0
    for arch in ("mgssnet", "mbt2018-mean", "bmshj2018-factorized"):
        codec = geocompress.load_codec(arch, pretrained=False, **SMALL[arch])
        good = codec.encode([natural_tile(64, 64, seed=1), natural_tile(40, 48, 4, seed=2)])
        refs = codec.decode(good)
        for k in range(n):
            ts = unpack(good[k % 2])
            h, groups = ts.header, [list(g) for g in ts.groups]
            kind = rng.randrange(5)
            if kind == 4:  # issue 36: one header field edited as a forger would, CRC recomputed
                edit = header_edit(rng, good[k % 2], h)
                if edit is None:
                    continue
                f, v, forged = edit
                edited += 1
                try:
                    out = codec.decode([forged])[0]
                except CodecError:
                    continue
                except Exception:
                    bad.append((arch, k, f"{f}={v}", traceback.format_exc(limit=3)))
                    continue
                ref = refs[k % 2]
                fh = unpack(forged).header
                c, y, x = (min(a, b) for a, b in zip(out.shape, ref.shape))
                if f in ("quality", "version"):  # fixed by the weights: never decoded
                    bad.append((arch, k, f"{f}={v} decoded"))
                elif out.shape != (fh.channels, fh.height, fh.width):
                    bad.append((arch, k, f"{f}={v}: shape {out.shape} is not the header's"))
                elif f != "bits" and not np.array_equal(out[:c, :y, :x], ref[:c, :y, :x]):
                    # a declared shape within the coded one crops or extends the same pixels
                    # (a store refuses a header whose bands, size or bits are not its own)
                    bad.append((arch, k, f"{f}={v}: other pixels than the original's"))
                continue
            if kind == 0:  # one header field set to an extreme or random value
                f = rng.choice(fields)
                v = rng.choice([0, 1, 2, 3, 15, 16, 17, 63, 64, 65, 255, 4096, 8192, 65535,
                                rng.randrange(65536)])
                if f == "bits":
                    v = min(v, 255)
                h = dataclasses.replace(h, **{f: v})
            elif kind == 1:  # payload bytes flipped
                g = rng.randrange(len(groups)); s = rng.randrange(len(groups[g]))
                b = bytearray(groups[g][s])
                for _ in range(rng.randrange(1, 6)):
                    if b:
                        b[rng.randrange(len(b))] = rng.randrange(256)
                groups[g][s] = bytes(b)
            elif kind == 2:  # streams cut, extended, dropped, duplicated or swapped
                g = rng.randrange(len(groups)); s = rng.randrange(len(groups[g]))
                op = rng.randrange(5)
                if op == 0:
                    groups[g][s] = groups[g][s][:rng.randrange(len(groups[g][s]) + 1)]
                elif op == 1:
                    groups[g][s] = groups[g][s] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
                elif op == 2:
                    groups[g].pop(s)
                elif op == 3:
                    groups.append(list(groups[g]))
                else:
                    groups[g] = groups[g][::-1]
            else:  # random bytes as streams
                groups = [[bytes(rng.randrange(256) for _ in range(rng.randrange(0, 64)))
                           for _ in g] for g in groups]
            forged = pack(TileString(h, groups))
            try:
                out = codec.decode([forged])[0]
                assert out.shape == (h.channels, h.height, h.width), out.shape
            except CodecError:
                pass
            except Exception:
                bad.append((arch, k, traceback.format_exc(limit=3)))
    for b in bad[:5]:
        print(*b, sep="\n")
    print(f"forged {3 * n} strings, {len(bad)} unexpected exceptions or silent decodes; "
          f"{edited} header edits")
    sys.exit(1 if bad else 0)
''')


def test_hundreds_of_crc_valid_forgeries_never_crash_hang_or_leak_raw_errors():
    """Issue 36 (done when): the forgeries include edited header fields -- quality, version,
    channel count, declared size, padding, bits -- with the CRC recomputed. An edited quality
    or version is refused; any other edit is refused or decodes to the header's own shape with
    the original pixels where the two overlap (a store's own header check refuses the rest:
    test_edited_headers_in_a_store_are_refused_naming_the_tile)."""
    run = subprocess.run([sys.executable, "-c", FUZZ, str(REPO), "7", "120"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, (run.returncode, run.stdout[-3000:], run.stderr[-3000:])
    assert "forged 360 strings, 0 unexpected" in run.stdout
    assert int(run.stdout.split("; ")[-1].split()[0]) >= 40  # header edits among them


def test_padding_that_disagrees_with_the_size_is_refused_before_decoding(small_codecs):
    import dataclasses

    codec = small_codecs("mgssnet")
    ts = unpack(codec.encode([natural_tile(64, 64, seed=3)])[0])
    forged = pack(TileString(dataclasses.replace(ts.header, pad_h=8192, pad_w=8192), ts.groups))
    with pytest.raises(CorruptStreamError, match="tile 0: header pads 64 x 64 to 8192 x 8192"):
        codec.decode([forged])
    bits = pack(TileString(dataclasses.replace(ts.header, bits=9), ts.groups))
    with pytest.raises(CorruptStreamError, match="9 bits for a uint8 tile"):
        codec.decode([bits])


def test_an_image_array_in_hwc_order_is_refused(small_codecs):
    codec = small_codecs("mbt2018-mean")
    with pytest.raises(CodecError, match="looks like H x W x C"):
        codec.encode(np.zeros((64, 64, 3), np.uint8))


def test_a_header_declaring_hundreds_of_band_groups_is_refused_before_any_decoding(
        small_codecs, monkeypatch):
    """Issue 36, item 10: a CRC-valid string declaring 255 band groups (765 bands) kept the
    decoder busy for minutes; what a header declares is bounded by what the codec writes."""
    import dataclasses

    from geocompress.codec.tile_codec import MAX_BAND_GROUPS

    codec = small_codecs("mgssnet")
    ts = unpack(codec.encode([natural_tile(64, 64, seed=5)])[0])
    forged = pack(TileString(dataclasses.replace(ts.header, channels=765), ts.groups * 255))

    def never(*a, **k):
        raise AssertionError("the decoder ran on a header it should have refused")

    monkeypatch.setattr(codec.coder, "decode", never)
    with pytest.raises(CorruptStreamError, match="255 band groups"):
        codec.decode([forged])
    # a tile of many bands and the largest size: bounded by band groups x pixels as well
    big = dataclasses.replace(ts.header, channels=12, height=4096, width=4096, pad_h=4096,
                              pad_w=4096)
    with pytest.raises(CorruptStreamError, match="more than this codec codes"):
        codec.decode([pack(TileString(big, ts.groups * 4))])
    # and the encoder never writes what the decoder refuses
    with pytest.raises(CodecError, match="at most"):
        codec.encode([np.zeros((3 * MAX_BAND_GROUPS + 1, 64, 64), np.uint8)])


def _downgraded(s: bytes, version: int) -> bytes:
    """A version-3 string rewritten as ``version`` 1 or 2 (no halo byte), CRC recomputed."""
    import struct
    import zlib

    halo_at = 4 + 2 + s[5] + struct.calcsize("<8sBBBHHHHH")
    assert s[4] == 3 and s[halo_at] == 0
    body = s[:4] + bytes([version]) + s[5:halo_at] + s[halo_at + 1:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def test_an_edited_quality_byte_or_a_downgraded_version_is_refused(small_codecs):
    """Issue 36, item 13: a CRC-valid string with its quality byte changed, or its format version
    downgraded (version 1 reads the symbols in raster order: other pixels), still decoded. The
    weights named by the header's digest fix both fields."""
    import dataclasses

    from geocompress.codec.tile_codec import TileCodec
    from geocompress.codec.weights import untrained

    from .conftest import SMALL

    codec = small_codecs("mgssnet")
    s = codec.encode([natural_tile(64, 64, seed=6)])[0]
    assert codec.decode([s])[0].shape == (3, 64, 64)
    ts = unpack(s)
    for q in (1, 5, 255):
        forged = pack(TileString(dataclasses.replace(ts.header, quality=q), ts.groups))
        with pytest.raises(CorruptStreamError, match=f"quality {q}.*altered"):
            codec.decode([forged])
    for v in (1, 2):
        with pytest.raises(CorruptStreamError, match=f"format version {v}.*never wrote"):
            codec.decode([_downgraded(s, v)])
    # a variable-rate model's quality byte is 0 (its level travels in the rate field)
    vr = TileCodec(untrained("mgssnet-vr", **SMALL["mgssnet-vr"]), quality=3.0, precision="float64")
    sv = unpack(vr.encode([natural_tile(64, 64, seed=7)])[0])
    with pytest.raises(CorruptStreamError, match="quality 3.*altered"):
        vr.decode([pack(TileString(dataclasses.replace(sv.header, quality=3), sv.groups))])


def test_edited_headers_in_a_store_are_refused_naming_the_tile(tmp_path):
    """Issue 36: a tile whose header was edited (CRC recomputed, and the store's own tile CRC
    rewritten to match, as a careful forger would) is never decoded into the scene: the store's
    header check or the codec refuses it, naming its grid row and column -- not its place in the
    decode batch (issue 36, messages)."""
    import dataclasses

    from geocompress.geo import TileStatus
    from geocompress.scene import compress_scene
    from geocompress.scene.mosaic import decode_region, store_spec
    from geocompress.store import StoreError, TileStore

    from .test_scene import TINY, write_scene

    src = write_scene(tmp_path / "s.tif", natural_tile(128, 192, seed=21))
    store = tmp_path / "s.zarr"
    compress_scene(src, store, **TINY)
    ts = TileStore.open(store, "r+")
    assert (ts.status() == TileStatus.WRITTEN).all() and ts.status().shape == (2, 3)
    spec = store_spec(ts).to_dict()
    good = ts.read_string(1, 2)
    h, groups = unpack(good).header, unpack(good).groups
    edits = {f"{f}={v}": pack(TileString(dataclasses.replace(h, **{f: v}), groups))
             for f, v in (("channels", 2), ("height", 63), ("width", 32), ("bits", 7),
                          ("quality", 1), ("pad_h", 128))}
    edits["version=2"] = _downgraded(good, 2)
    for name, forged in edits.items():
        ts._tiles[1:2, 2:3] = np.array([[forged]], dtype=object)
        ts._crc[1:2, 2:3] = np.array([[int.from_bytes(forged[-4:], "little")]], np.uint32)
        with pytest.raises((StoreError, CodecError), match=r"tile \(1, 2\)") as e:
            decode_region(str(store), (0, 0, 192, 128), spec)
        assert "tile 5" not in str(e.value), (name, e.value)
    ts._tiles[1:2, 2:3] = np.array([[good]], dtype=object)
    ts._crc[1:2, 2:3] = np.array([[int.from_bytes(good[-4:], "little")]], np.uint32)
    pixels, valid = decode_region(str(store), (0, 0, 192, 128), spec)
    assert valid.all()
