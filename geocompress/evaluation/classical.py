"""Classical image-codec anchors behind one interface.

Registered codecs (``available_codecs()`` lists the ones usable in this environment):

==========  ===========================================  ==================  ==================
name        backend / settings                           quality parameter   input support
==========  ===========================================  ==================  ==================
jpeg2000    OpenJPEG (bundled with Pillow) encode,       target bpp (float,  uint8 C=1/3,
            imagecodecs decode. Raw J2K codestream (no   higher = more bits) uint16 C=1/3
            JP2 boxes), irreversible 9/7 DWT, 5
            decomposition levels (fewer for tiny
            images), RGB->YCC MCT, one quality layer,
            OpenJPEG rate allocation ("rates" mode).
            uint16 C=3 goes through imagecodecs'
            OpenJPEG (PSNR-target mode) with a search
            on that target to meet the bpp.
webp        libwebp via imagecodecs, lossy, method 6     0..100 (float)      uint8 C=3; C=1 via
                                                                             grey->RGB (as cwebp)
avif        libavif/aom via imagecodecs, YUV 4:4:4,      0..99 (int)         uint8 C=3; uint16
            speed 6 (libavif default)                                        C=3 if max <= 4095
                                                                             (12-bit); C=1 via
                                                                             grey->RGB
jpegxl      libjxl via imagecodecs, effort 7             0..99 (float)       uint8/uint16,
                                                                             C=1/3
bpg-hevc    HEVC intra (x265) in a HEIF file via         QP 0..51 (int,      uint8 C=1/3
            pillow-heif (libheif + x265 + libde265).     LOWER = more bits)
            Mirrors bpgenc's x265 settings: constant
            QP, preset "veryslow" (bpgenc -m 8), tune
            "ssim", 4:2:0 (bpgenc default; 4:4:4 via
            chroma=444).
==========  ===========================================  ==================  ==================

Every codec takes ``HxWxC`` (C = 1 or 3; ``HxW`` is accepted as C = 1) ``uint8`` or ``uint16`` arrays,
and ``decode`` returns ``HxWxC`` of the encoded dtype (read back from the bitstream; a 1-band image
decodes as ``HxWx1`` -- for WebP/AVIF, which code grey as R=G=B, pass ``bands=1``). ``roundtrip``
returns exactly the input's shape and dtype. Unsupported dtype / band combinations raise
:class:`UnsupportedInput` (a ``ValueError``).

Rates are counted on the whole file: ``bpp = 8 * len(data) / (H * W)``
(:func:`geocompress.metrics.bpp`), and PSNR is :func:`geocompress.metrics.psnr` (peak: the dtype's
full range unless one is given). Note for ``bpg-hevc``: the HEIF
container (ftyp/meta boxes, ~370 bytes at 256x256) is counted too; a real ``.bpg`` file header is only
a few bytes, so at 256x256 the HEIF wrapping costs ~0.045 bpp more than BPG would.
(:func:`hevc_payload_bytes` returns the size of the HEVC data alone.)
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np

from geocompress import metrics as M

__all__ = [
    "RDPoint",
    "Codec",
    "UnsupportedInput",
    "available_codecs",
    "registered_codecs",
    "get_codec",
    "encode",
    "decode",
    "roundtrip",
    "sweep",
    "encode_at_bpp",
    "hevc_payload_bytes",
    "jpeg2000_encode",
    "jpeg2000_decode",
]


class UnsupportedInput(ValueError):
    """The codec cannot encode this dtype / number of bands (a ``ValueError``).

    A separate type so sweeps can skip an image a codec cannot take (e.g. 16-bit input for WebP)
    and record why, while real errors still stop them.
    """


class RDPoint(NamedTuple):
    """One rate-distortion point of a classical codec on one image.

    Attributes:
        bpp: ``8 * bytes / (H * W)``, the whole file counted.
        psnr: dB (:func:`geocompress.metrics.psnr`), peak = the dtype's full range unless one was
            given.
        bytes: the file's size.
        param: the codec quality parameter that produced it.
    """

    bpp: float
    psnr: float
    bytes: int
    param: float


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------

def _as_hwc(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise UnsupportedInput(f"expected HxWxC with C in (1, 3) (or HxW), got shape {a.shape}")
    if a.dtype not in (np.uint8, np.uint16):
        raise UnsupportedInput(f"expected uint8 or uint16, got {a.dtype}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise UnsupportedInput(f"empty image {a.shape}")
    return np.ascontiguousarray(a)


def _file_bpp(data: bytes, shape: Sequence[int]) -> float:
    """Rate of one file coding an ``H x W (x C)`` image (:func:`geocompress.metrics.bpp`)."""
    return M.bpp(data, int(shape[0]) * int(shape[1]))



def _grey_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(a, 3, axis=2))


def _rgb_to_grey(d: np.ndarray) -> np.ndarray:
    """Read back a grey image that was coded as R=G=B (mean of the three decoded planes)."""
    if d.ndim == 2:
        return d[:, :, None]
    m = np.rint(d[:, :, :3].astype(np.float64).mean(axis=2))
    return m.astype(d.dtype)[:, :, None]


# --------------------------------------------------------------------------------------------------
# codec registry
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Codec:
    """One registered classical codec: its backend functions and what its quality parameter means.

    A value, so every codec is driven the same way (sweeps, rate targeting) whatever its backend
    and whichever direction its parameter runs.

    Attributes:
        name: the registry name (``"jpeg2000"``, ``"webp"``, ...).
        encode_fn: ``(H x W x C array, param, **opts) -> bytes``.
        decode_fn: ``bytes -> H x W x C array``.
        param_range: inclusive bounds of the quality parameter.
        default_grid: a default sweep spanning the useful range, low rate to high.
        increasing: True when a larger parameter gives more bits (False for HEVC's QP).
        integer: the parameter is rounded to an integer before encoding.
        is_available: whether the backend is installed and usable here.
        supports: a human-readable note on the input it takes.
        check_fn: raises :class:`UnsupportedInput` for input the codec cannot take.
    """

    name: str
    encode_fn: Callable[..., bytes]          # (hwc array, param, **opts) -> bytes
    decode_fn: Callable[[bytes], np.ndarray]  # bytes -> HxWxC
    param_range: tuple[float, float]         # inclusive bounds of the quality parameter
    default_grid: tuple[float, ...]          # a default sweep, low rate -> high rate
    increasing: bool = True                  # True: larger param -> more bits
    integer: bool = False                    # parameter is an integer
    is_available: Callable[[], bool] = field(default=lambda: True)
    supports: str = ""                       # human-readable support note
    check_fn: Callable[[np.ndarray], None] | None = None  # raises UnsupportedInput

    @property
    def available(self) -> bool:
        """Whether the backend can be used here (False also when probing it fails).

        Returns:
            True when the backend library is installed with this codec enabled.
        """
        try:
            return bool(self.is_available())
        except Exception:
            return False

    def check(self, img: np.ndarray) -> np.ndarray:
        """The image as this codec takes it, or why it cannot.

        Args:
            img: ``H x W x C`` (C in 1, 3) or ``H x W``, uint8 or uint16.

        Returns:
            The C-contiguous ``H x W x C`` array.

        Raises:
            UnsupportedInput: another layout or dtype, or input this codec cannot store.
        """
        a = _as_hwc(img)
        if self.check_fn is not None:
            self.check_fn(a)
        return a

    def encode(self, img: np.ndarray, param: float, **opts: Any) -> bytes:
        """Encode one image at one quality parameter.

        Args:
            img: ``H x W x C`` (C in 1, 3) or ``H x W``, uint8 or uint16.
            param: the quality parameter, within ``param_range`` (rounded when ``integer``).
            **opts: backend options (e.g. ``method`` for WebP, ``chroma`` for HEVC).

        Returns:
            The file's bytes.

        Raises:
            RuntimeError: the backend is not available here.
            ValueError: ``param`` outside ``param_range`` (a silent clamp would mislabel the point).
            UnsupportedInput: input the codec cannot take.
        """
        if not self.available:
            raise RuntimeError(f"codec {self.name!r} is not available in this environment")
        a = self.check(img)
        lo, hi = self.param_range
        if not (lo <= param <= hi):
            raise ValueError(f"{self.name}: quality parameter {param} outside [{lo}, {hi}]")
        if self.integer:
            param = int(round(param))
        return bytes(self.encode_fn(a, param, **opts))

    def decode(self, data: bytes) -> np.ndarray:
        """Decode bytes from :meth:`encode`.

        Args:
            data: the file's bytes.

        Returns:
            ``H x W x C`` array of the coded dtype (WebP / AVIF: 3 bands for grey input, see
            :func:`decode`).
        """
        return self.decode_fn(bytes(data))


# ---------------------------------------------------------------------------- JPEG 2000

_J2K_MAX_LEVELS = 5


def _j2k_resolutions(h: int, w: int) -> int:
    # OpenJPEG needs each dimension >= 2**(numresolutions-1)
    levels = min(_J2K_MAX_LEVELS, max(0, int(math.floor(math.log2(max(1, min(h, w)))))))
    return levels + 1


def _j2k_check(a: np.ndarray) -> None:
    pass  # uint8/uint16, C=1/3 are all supported


def _j2k_encode_pillow(a: np.ndarray, bpp: float) -> bytes:
    from PIL import Image

    h, w, c = a.shape
    if c == 3:
        im = Image.fromarray(a)  # RGB
        bits = 24
    elif a.dtype == np.uint8:
        im = Image.fromarray(a[:, :, 0])  # L
        bits = 8
    else:
        im = Image.fromarray(np.ascontiguousarray(a[:, :, 0].astype("<u2")))  # mode I;16
        bits = 16
    ratio = bits / float(bpp)
    buf = io.BytesIO()
    im.save(
        buf, "JPEG2000", quality_mode="rates", quality_layers=[max(ratio, 1.0)],
        num_resolutions=_j2k_resolutions(h, w), irreversible=True, mct=1 if c == 3 else 0,
        no_jp2=True,
    )
    return buf.getvalue()


def _j2k_encode_imagecodecs_level(a: np.ndarray, level: float) -> bytes:
    import imagecodecs

    h, w, c = a.shape
    src = a if c == 3 else a[:, :, 0]
    return imagecodecs.jpeg2k_encode(
        np.ascontiguousarray(src), level=level, codecformat="J2K", reversible=False,
        resolutions=_j2k_resolutions(h, w), mct=True,
    )


def _j2k_encode_imagecodecs_bpp(a: np.ndarray, bpp: float) -> bytes:
    """imagecodecs' OpenJPEG binding has no rate mode: its ``level`` is OpenJPEG's fixed-quality
    (PSNR-target, dB) allocation. Search that target for the largest file with bpp <= ``bpp``."""
    h, w, _ = a.shape
    lo, hi = 1.0, 99.0
    best = _j2k_encode_imagecodecs_level(a, lo)
    if _file_bpp(best, a.shape) > bpp:
        return best  # cannot go lower; caller sees the overshoot
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        data = _j2k_encode_imagecodecs_level(a, mid)
        if _file_bpp(data, a.shape) <= bpp:
            best, lo = data, mid
        else:
            hi = mid
        if hi - lo < 0.01:
            break
    return best


def jpeg2000_encode(a: np.ndarray, bpp: float, **opts: Any) -> bytes:
    """The raw JPEG 2000 encoder behind codec ``"jpeg2000"``, without the registry's checks.

    Public for benchmarks that time OpenJPEG alone (no input validation, no registry lookup in
    the measured loop); everything else should call :func:`encode` / :func:`encode_at_bpp`.

    Args:
        a: ``H x W x C`` image, C in (1, 3), uint8 or uint16, C-contiguous (as
            :meth:`Codec.check` returns it).
        bpp: target rate in bits per pixel; OpenJPEG's rate allocation lands at or just under
            it (uint16 RGB: a search on imagecodecs' PSNR target, see the module docstring).
        **opts: none are accepted; the parameter exists so the registry can pass the same
            keyword options to every codec.

    Returns:
        A raw J2K codestream (no JP2 boxes).

    Raises:
        TypeError: any option was given (JPEG 2000 takes none; a misspelt one must not pass).
    """
    if opts:
        raise TypeError(f"jpeg2000: unexpected options {sorted(opts)}")
    if a.dtype == np.uint16 and a.shape[2] == 3:
        return _j2k_encode_imagecodecs_bpp(a, bpp)  # Pillow has no 16-bit RGB mode
    return _j2k_encode_pillow(a, bpp)


def jpeg2000_decode(data: bytes) -> np.ndarray:
    """The raw JPEG 2000 decoder behind codec ``"jpeg2000"`` (OpenJPEG through imagecodecs).

    Public for the same reason as :func:`jpeg2000_encode`: benchmarks time the decoder alone.

    Args:
        data: a J2K codestream from :func:`jpeg2000_encode`.

    Returns:
        ``H x W x C`` array of the coded dtype (a 1-band image as ``H x W x 1``, the layout
        every codec here returns).
    """
    import imagecodecs

    d = imagecodecs.jpeg2k_decode(data)
    return d[:, :, None] if d.ndim == 2 else d


def _j2k_available() -> bool:
    import imagecodecs
    from PIL import features

    return bool(imagecodecs.JPEG2K.available) and bool(features.check("jpg_2000"))


# ---------------------------------------------------------------------------- WebP

def _webp_check(a: np.ndarray) -> None:
    if a.dtype != np.uint8:
        raise UnsupportedInput("webp: only uint8 input is supported (WebP is an 8-bit format)")


def _webp_encode(a: np.ndarray, q: float, method: int = 6) -> bytes:
    import imagecodecs

    src = _grey_to_rgb(a) if a.shape[2] == 1 else a
    return imagecodecs.webp_encode(src, level=float(q), lossless=False, method=method)


def _webp_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    d = imagecodecs.webp_decode(data)
    return d


def _webp_available() -> bool:
    import imagecodecs

    return bool(imagecodecs.WEBP.available)


# ---------------------------------------------------------------------------- AVIF
# imagecodecs' AVIF binding encodes monochrome (YUV400) input losslessly whatever the level, so
# grey images are coded as R=G=B (what avifenc does with grey PNGs when 4:0:0 is not asked for).

def _avif_check(a: np.ndarray) -> None:
    if a.dtype == np.uint16 and int(a.max(initial=0)) > 4095:
        raise UnsupportedInput(
            "avif: uint16 input must fit in 12 bits (max <= 4095); AVIF stores at most 12 bits/sample"
        )


def _avif_encode(a: np.ndarray, q: int, speed: int = 6, pixelformat: str = "444") -> bytes:
    import imagecodecs

    pf = {"444": imagecodecs.AVIF.PIXEL_FORMAT.YUV444, "420": imagecodecs.AVIF.PIXEL_FORMAT.YUV420,
          "422": imagecodecs.AVIF.PIXEL_FORMAT.YUV422}[str(pixelformat)]
    src = _grey_to_rgb(a) if a.shape[2] == 1 else a
    kw: dict[str, Any] = dict(level=int(q), speed=int(speed), pixelformat=pf)
    if a.dtype == np.uint16:
        kw["bitspersample"] = 12
    return imagecodecs.avif_encode(src, **kw)


def _avif_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    d = imagecodecs.avif_decode(data)
    return d[:, :, None] if d.ndim == 2 else d


def _avif_available() -> bool:
    import imagecodecs

    return bool(imagecodecs.AVIF.available)


# ---------------------------------------------------------------------------- JPEG XL

def _jxl_encode(a: np.ndarray, q: float, effort: int = 7) -> bytes:
    import imagecodecs

    src = a[:, :, 0] if a.shape[2] == 1 else a
    return imagecodecs.jpegxl_encode(np.ascontiguousarray(src), level=float(q), effort=int(effort))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    d = imagecodecs.jpegxl_decode(data)
    return d[:, :, None] if d.ndim == 2 else d


def _jxl_available() -> bool:
    import imagecodecs

    return bool(imagecodecs.JPEGXL.available)


# ---------------------------------------------------------------------------- HEVC intra (BPG-like)

def _heif_check(a: np.ndarray) -> None:
    if a.dtype != np.uint8:
        raise UnsupportedInput("bpg-hevc: only uint8 input is supported (8-bit HEVC intra)")


def _heif_encode(a: np.ndarray, qp: int, chroma: int = 420, preset: str = "veryslow",
                 tune: str = "ssim") -> bytes:
    import pillow_heif

    h, w, c = a.shape
    mode = "RGB" if c == 3 else "L"
    hf = pillow_heif.from_bytes(mode=mode, size=(w, h), data=a.tobytes())
    buf = io.BytesIO()
    enc_params = {"preset": preset, "tune": tune, "x265:qp": str(int(qp))}
    kw: dict[str, Any] = {"quality": 50, "enc_params": enc_params}  # quality is overridden by qp
    if c == 3:
        kw["chroma"] = int(chroma)
    hf.save(buf, **kw)
    return buf.getvalue()


def _heif_decode(data: bytes) -> np.ndarray:
    import pillow_heif

    f = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)
    d = np.asarray(f[0])
    return d[:, :, None] if d.ndim == 2 else d


def _heif_available() -> bool:
    import pillow_heif

    info = pillow_heif.libheif_info()
    return "x265" in (info.get("encoders") or {}) and bool(info.get("decoders"))


def hevc_payload_bytes(data: bytes) -> int:
    """Size of the coded HEVC data (the ``mdat`` payload) in a HEIF file from ``bpg-hevc``.

    The HEIF container costs ~370 bytes that a real ``.bpg`` file does not; this separates the
    coding tool's rate from the container's.

    Args:
        data: a HEIF file's bytes.

    Returns:
        The ``mdat`` box's payload size in bytes.

    Raises:
        ValueError: the file has no ``mdat`` box.
    """
    i = 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        hdr = 8
        if size == 1:
            size = int.from_bytes(data[i + 8:i + 16], "big")
            hdr = 16
        elif size == 0:
            size = len(data) - i
        if kind == b"mdat":
            return size - hdr
        if size < hdr:
            break
        i += size
    raise ValueError("no mdat box found")


# ---------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Codec] = {}


def _register(c: Codec) -> None:
    _REGISTRY[c.name] = c


_register(Codec(
    "jpeg2000", jpeg2000_encode, jpeg2000_decode, param_range=(0.005, 32.0),
    default_grid=(0.0625, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0),
    increasing=True, integer=False, is_available=_j2k_available, check_fn=_j2k_check,
    supports="uint8/uint16, 1 or 3 bands",
))
_register(Codec(
    "webp", _webp_encode, _webp_decode, param_range=(0.0, 100.0),
    default_grid=(0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100),
    increasing=True, integer=False, is_available=_webp_available, check_fn=_webp_check,
    supports="uint8, 3 bands (1 band coded as R=G=B)",
))
_register(Codec(
    "avif", _avif_encode, _avif_decode, param_range=(0, 99),
    default_grid=(0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90),
    increasing=True, integer=True, is_available=_avif_available, check_fn=_avif_check,
    supports="uint8 or <=12-bit uint16, 3 bands (1 band coded as R=G=B)",
))
_register(Codec(
    "jpegxl", _jxl_encode, _jxl_decode, param_range=(0.0, 99.0),
    default_grid=(0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95),
    increasing=True, integer=False, is_available=_jxl_available,
    supports="uint8/uint16, 1 or 3 bands",
))
_register(Codec(
    "bpg-hevc", _heif_encode, _heif_decode, param_range=(0, 51),
    default_grid=(46, 43, 40, 37, 34, 31, 28, 25, 22, 19),
    increasing=False, integer=True, is_available=_heif_available, check_fn=_heif_check,
    supports="uint8, 1 or 3 bands",
))


def registered_codecs() -> list[str]:
    """Every codec name this module defines, available here or not (for help texts and plans).

    Returns:
        Registry names in registration order.
    """
    return list(_REGISTRY)


def available_codecs() -> list[str]:
    """The codecs whose backends are usable in this environment: what a sweep can actually run.

    Returns:
        Registry names in registration order.
    """
    return [n for n, c in _REGISTRY.items() if c.available]


def get_codec(name: str) -> Codec:
    """The registered codec of that name.

    Args:
        name: a registry name (see :func:`registered_codecs`).

    Returns:
        Its :class:`Codec`.

    Raises:
        KeyError: an unknown name (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown codec {name!r}; registered: {registered_codecs()}") from None


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------

def encode(name: str, img: np.ndarray, quality_param: float, **opts: Any) -> bytes:
    """Encode ``img`` with codec ``name``.

    Args:
        name: a registry name.
        img: ``H x W x C`` (C in 1, 3) or ``H x W``, uint8 or uint16.
        quality_param: the codec's quality parameter (see the module docstring's table).
        **opts: backend options.

    Returns:
        The file's bytes.

    Raises:
        KeyError: an unknown codec.
        RuntimeError: the codec is not available here.
        ValueError: ``quality_param`` outside the codec's range.
        UnsupportedInput: input the codec cannot take.
    """
    return get_codec(name).encode(img, quality_param, **opts)


def decode(name: str, data: bytes, *, bands: int | None = None) -> np.ndarray:
    """Decode bytes from :func:`encode`.

    WebP and AVIF code a 1-band image as R=G=B, so their files decode to 3 bands; ``bands=1``
    gives the 1-band image back (the mean of the three planes). All other codecs store the band
    count.

    Args:
        name: the registry name that encoded ``data``.
        data: the file's bytes.
        bands: the number of bands expected (None: as decoded).

    Returns:
        ``H x W x C`` array of the encoded dtype.

    Raises:
        KeyError: an unknown codec.
        ValueError: the file decodes to another number of bands than ``bands``.
    """
    d = get_codec(name).decode(data)
    if bands == 1 and d.shape[2] == 3:
        d = _rgb_to_grey(d)
    elif bands is not None and d.shape[2] != bands:
        raise ValueError(f"{name}: decoded {d.shape[2]} bands, expected {bands}")
    return d


def roundtrip(name: str, img: np.ndarray, quality_param: float, **opts: Any) -> tuple[bytes, np.ndarray]:
    """Encode then decode, the decoded array in exactly ``img``'s shape and dtype.

    What every measurement needs: the bytes for the rate, the reconstruction for the quality,
    compared sample by sample with the input.

    Args:
        name: a registry name.
        img: ``H x W x C`` (C in 1, 3) or ``H x W``, uint8 or uint16.
        quality_param: the codec's quality parameter.
        **opts: backend options.

    Returns:
        ``(file bytes, reconstruction)``.

    Raises:
        KeyError: an unknown codec.
        ValueError: ``quality_param`` outside the codec's range.
        UnsupportedInput: input the codec cannot take.
        RuntimeError: the codec is not available, or decodes to another shape or dtype.
    """
    a = np.asarray(img)
    hwc = _as_hwc(a)
    data = encode(name, a, quality_param, **opts)
    d = decode(name, data, bands=hwc.shape[2])
    if d.shape != hwc.shape or d.dtype != hwc.dtype:
        raise RuntimeError(f"{name}: decoded {d.shape} {d.dtype} != input {hwc.shape} {hwc.dtype}")
    return data, d.reshape(a.shape)


def _point(name: str, img: np.ndarray, param: float, peak: float | None,
           **opts: Any) -> tuple[RDPoint, bytes, np.ndarray]:
    data, dec = roundtrip(name, img, param, **opts)
    point = RDPoint(_file_bpp(data, img.shape), M.psnr(img, dec, peak), len(data), float(param))
    return point, data, dec


def sweep(name: str, img: np.ndarray, targets: Iterable[float] | None = None, *, by: str = "param",
          peak: float | None = None, **opts: Any) -> list[RDPoint]:
    """Rate-distortion points of codec ``name`` on ``img``, sorted by bpp.

    Args:
        name: a registry name.
        img: ``H x W x C`` (C in 1, 3) or ``H x W``, uint8 or uint16.
        targets: ``by="param"``: quality parameters (None: the codec's default grid, which spans
            its useful range); ``by="bpp"``: bit rates, each point from :func:`encode_at_bpp` (at
            or just under the target; unreachable targets are skipped).
        by: ``"param"`` or ``"bpp"``.
        peak: PSNR peak; None: :func:`geocompress.metrics.psnr`'s default, the dtype's full range
            (255 / 65535). Pass ``2**bits - 1`` for imagery with fewer significant bits.
        **opts: backend options.

    Returns:
        One :class:`RDPoint` per reached target, by increasing bpp.

    Raises:
        ValueError: ``by`` is neither ``"param"`` nor ``"bpp"``, ``by="bpp"`` without targets, or
            a parameter outside the codec's range.
        KeyError: an unknown codec.
        UnsupportedInput: input the codec cannot take.
    """
    img = np.asarray(img)
    c = get_codec(name)
    pts: list[RDPoint] = []
    if by == "param":
        for p in (c.default_grid if targets is None else targets):
            pts.append(_point(name, img, p, peak, **opts)[0])
    elif by == "bpp":
        if targets is None:
            raise ValueError("by='bpp' needs explicit target rates")
        for t in targets:
            try:
                data, dec, param = _encode_at_bpp(name, img, float(t), **opts)
            except ValueError:
                continue
            pts.append(RDPoint(_file_bpp(data, img.shape), M.psnr(img, dec, peak), len(data), float(param)))
    else:
        raise ValueError("by must be 'param' or 'bpp'")
    pts.sort(key=lambda p: (p.bpp, p.psnr))
    return pts


def _encode_at_bpp(name: str, img: np.ndarray, target_bpp: float, *, max_iter: int = 30,
                   **opts: Any) -> tuple[bytes, np.ndarray, float]:
    c = get_codec(name)
    lo, hi = c.param_range
    # "cheap" end gives the fewest bits, "rich" end the most
    cheap, rich = (lo, hi) if c.increasing else (hi, lo)

    def enc(p: float) -> tuple[bytes, np.ndarray, float]:
        data, dec = roundtrip(name, img, p, **opts)
        return data, dec, _file_bpp(data, img.shape)

    if name == "jpeg2000":
        # rate-controlled: start at the target itself, then tighten only if OpenJPEG overshot
        rich = min(hi, target_bpp)
        data, dec, b = enc(rich)
        if b <= target_bpp:
            return data, dec, rich

    data, dec, b = enc(cheap)
    if b > target_bpp:
        raise ValueError(f"{name}: cannot reach {target_bpp:.4f} bpp (lowest setting gives {b:.4f} bpp)")
    best = (data, dec, cheap)
    data, dec, b = enc(rich)
    if b <= target_bpp:
        return data, dec, rich
    a_, z_ = cheap, rich  # a_: under target, z_: over target
    # parameter resolution: 1/1000 of the range (JPEG 2000: its parameter is the rate itself)
    tol = 2e-3 * target_bpp if name == "jpeg2000" else 1e-3 * (hi - lo)
    for _ in range(max_iter):
        if c.integer:
            if abs(z_ - a_) <= 1:
                break
            mid = float(int((a_ + z_) / 2))
        else:
            mid = 0.5 * (a_ + z_)
            if abs(z_ - a_) <= tol:
                break
        data, dec, b = enc(mid)
        if b <= target_bpp:
            best, a_ = (data, dec, mid), mid
        else:
            z_ = mid
    return best


def encode_at_bpp(name: str, img: np.ndarray, target_bpp: float, **opts: Any) -> tuple[bytes, np.ndarray]:
    """The largest-rate encoding of ``img`` with ``bpp <= target_bpp``.

    Codecs are compared at equal rates (the visual comparison, the classification near 0.8 bpp),
    but most take a quality parameter, not a rate: this bisects the parameter (JPEG 2000 uses
    OpenJPEG's rate control directly and tightens only if it overshot).

    Args:
        name: a registry name.
        img: ``H x W x C`` (C in 1, 3) or ``H x W``, uint8 or uint16.
        target_bpp: the rate not to exceed.
        **opts: backend options (and ``max_iter``, the bisection's step limit, default 30).

    Returns:
        ``(file bytes, reconstruction)``.

    Raises:
        ValueError: even the codec's lowest setting exceeds the target.
        KeyError: an unknown codec.
        UnsupportedInput: input the codec cannot take.
    """
    data, dec, _ = _encode_at_bpp(name, np.asarray(img), float(target_bpp), **opts)
    return data, dec
