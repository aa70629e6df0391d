"""What runs inside a Dask worker: the codec loaded once per process, on the worker's device.

Tasks carry a small :class:`CodecSpec` (names, digest, paths), never a model: each worker process
builds the codec the first time it sees a spec and keeps it, so a scene of thousands of tiles loads
the weights once per worker. Workers started with ``--resources GPU=1`` (or a LocalCluster with
``resources={"GPU": 1}``) run the model on their GPU; all others on CPU. The entropy path is exact
(:mod:`geocompress.codec.exact`), so a store written by a GPU worker decodes identically on CPU.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..store.masks import decode_mask, encode_mask  # noqa: F401 - the pipeline's names for them

if TYPE_CHECKING:  # the codec (torch, CompressAI) is imported when a codec is built, not before
    from ..codec import TileCodec
    from ..codec.decoding import TileDecoder

_CACHE: dict[tuple, "TileCodec | TileDecoder"] = {}
_LOCK = threading.Lock()
_BUILD_LOCK = threading.Lock()


@dataclass(frozen=True)
class CodecSpec:
    """Everything a worker needs to rebuild the exact codec a store was written with.

    Args:
        arch: the architecture.
        digest: the weights' digest (the rebuilt codec must have it).
        quality: a shipped quality, or a variable-rate model's level.
        checkpoint: a weights file, if not shipped.
        model_config: the architecture's configuration (fixed-seed weights).
        precision: resolved by each worker for its own device.
        batch_size: tiles per model batch.
        torch_threads: torch threads set in the worker (None: as it is).
        device: None: the worker decides (GPU resource -> cuda).
        refine_steps: encoder-side latent refinement (:mod:`geocompress.codec.refine`).
        pretrained: False: the architecture's fixed-seed weights (pipeline tests).
    """

    arch: str
    digest: str
    quality: float = 0         # a shipped quality, or a variable-rate model's level
    checkpoint: str | None = None
    model_config: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    precision: str = "auto"    # resolved by each worker for its own device
    batch_size: int = 8
    torch_threads: int | None = None
    device: str | None = None  # None: the worker decides (GPU resource -> cuda)
    refine_steps: int = 0      # encoder-side latent refinement (geocompress.codec.refine)
    pretrained: bool = True    # False: the architecture's fixed-seed weights (pipeline tests)

    @classmethod
    def of(cls, codec: TileCodec, checkpoint: str | None = None, **kw: Any) -> "CodecSpec":
        """The spec of a codec built here.

        Args:
            codec: the codec.
            checkpoint: its weights file, if not shipped.
            **kw: other fields (``batch_size``, ``torch_threads``, ``precision``, ...).

        Returns:
            The spec.
        """
        kw.setdefault("precision", codec.precision)
        return cls(arch=codec.arch, digest=codec.digest, quality=codec.quality,
                   checkpoint=checkpoint, model_config=dict(codec.config),
                   refine_steps=codec.refine_steps, **kw)

    def to_dict(self) -> dict:
        """The spec as plain data (what tasks carry).

        Returns:
            Its fields by name.
        """
        return asdict(self)


def worker_device() -> str:
    """Where this process runs the model.

    Returns:
        ``"cuda"`` on a Dask worker that declares a GPU resource and has one, else ``"cpu"``.
    """
    import sys

    if "distributed" not in sys.modules:  # not a Dask worker (in-process run): no import
        return "cpu"
    try:
        from distributed import get_worker

        resources = get_worker().state.total_resources
    except (ImportError, ValueError, AttributeError):
        resources = {}
    if resources.get("GPU"):
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def _key(spec: CodecSpec, device: str) -> tuple:
    return (spec.arch, spec.digest, spec.checkpoint, spec.quality, spec.precision,
            spec.refine_steps, device)


def adopt_codec(spec: CodecSpec, codec: TileCodec) -> None:
    """Let tasks run in this process use ``codec`` (the one the caller built and ``spec`` was made
    from: same weights, quality, precision, refinement) instead of loading the weights again.

    Args:
        spec: the spec the tasks carry.
        codec: the codec built from it (ignored unless on CPU with the spec's digest).
    """
    if codec.digest != spec.digest or str(codec.device) != "cpu":
        return
    if spec.torch_threads:
        import torch

        torch.set_num_threads(spec.torch_threads)
    with _LOCK:
        _CACHE[_key(spec, spec.device or worker_device())] = codec


def get_codec(spec: CodecSpec) -> TileCodec:
    """The codec of ``spec`` on this worker's device, built once per process and kept.

    Args:
        spec: the codec the task needs.

    Returns:
        The codec, its batch size set to the spec's.

    Raises:
        WeightsMismatchError: the weights found differ from the spec's digest.
    """
    device = spec.device or worker_device()
    key = _key(spec, device)
    with _LOCK:
        codec = _CACHE.get(key)
        if codec is None:
            if spec.torch_threads:
                import torch

                torch.set_num_threads(spec.torch_threads)
            codec = build_codec(spec, device)
            _CACHE[key] = codec
    codec.batch_size = spec.batch_size
    return codec


def get_decoder(spec: CodecSpec) -> "TileDecoder":
    """The decoder of ``spec`` for region reads (``decompress``, the lazy view), built once per
    process and kept. On CPU, in precision ``auto`` or ``float32-onnx`` where ONNX Runtime is
    installed (``GEOCOMPRESS_ONNX`` not ``0``): the torch-free
    :class:`~geocompress.codec.numpy_decoder.NumpyDecoder` (PyTorch's ``float32-onnx`` pixels;
    its bundle is written from the PyTorch codec the first time the weights are read on this
    machine), so every reader of a store decodes the same pixels, without torch's start-up;
    otherwise (a GPU worker, another precision, no ONNX Runtime, a model it cannot decode)
    :func:`get_codec`'s codec.

    Args:
        spec: the codec the store was written with, and the precision to decode in.

    Returns:
        A decoder (``decode``, ``decode_latents``, ``synthesize``), its batch size set to the spec's.

    Raises:
        WeightsMismatchError: as :func:`get_codec`.
    """
    from ..codec.numpy_decoder import load, runtime_available

    if (spec.precision not in ("auto", "float32-onnx") or (spec.device or worker_device()) != "cpu"
            or not runtime_available()):
        return get_codec(spec)
    key = ("numpy", spec.digest)
    with _BUILD_LOCK:  # one thread loads (or writes) the bundle; the view's others wait for it
        with _LOCK:
            decoder = _CACHE.get(key)
        if decoder is None:
            decoder = (load(spec.digest, batch_size=spec.batch_size, config=spec.model_config)
                       or _write_bundle(spec))
            with _LOCK:
                _CACHE[key] = decoder
    if decoder is False:  # no bundle for these weights: PyTorch, in the spec's precision
        return get_codec(spec)
    decoder.batch_size = spec.batch_size
    return decoder


def _write_bundle(spec: CodecSpec):
    """The NumPy decoder of ``spec``'s weights, its bundle written from their PyTorch codec
    first; False where none can be (a structure it does not decode, an unwritable cache)."""
    import warnings

    from ..codec.decoder_bundle import NoBundle, write_bundle
    from ..codec.numpy_decoder import load

    codec = get_codec(replace(spec, precision="float32-onnx"))
    try:
        write_bundle(codec)
    except NoBundle:
        return False
    except OSError as e:
        warnings.warn(f"the torch-free decoder of weights {spec.digest[:16]} could not be cached "
                      f"({e}); decoding in PyTorch")
        return False
    return load(spec.digest, batch_size=spec.batch_size, config=spec.model_config) or False


def build_codec(spec: CodecSpec, device: str = "cpu") -> TileCodec:
    """The codec named by ``spec``.

    Args:
        spec: the codec wanted.
        device: where it runs.

    Returns:
        The codec.

    Raises:
        WeightsMismatchError: the weights found differ from the spec's digest (pass the checkpoint
            the store was written with).
        WeightsError: missing or damaged weights.
    """
    from ..codec import WeightsMismatchError, load_codec

    common = {"device": device, "precision": spec.precision, "batch_size": spec.batch_size,
              "refine_steps": spec.refine_steps}
    # a variable-rate model's level travels as its quality, and level 0 is a level; a fixed-rate
    # quality 0 is the untrained architecture's
    variable = "levels" in spec.model_config
    quality = spec.quality if variable else spec.quality or None
    if spec.checkpoint:
        codec = load_codec(checkpoint=spec.checkpoint, quality=quality, digest=spec.digest, **common)
    elif spec.pretrained and (variable or spec.quality):
        codec = load_codec(spec.arch, quality=quality, pretrained=True, digest=spec.digest, **common)
        if codec.digest != spec.digest and variable:  # every level of the fixed-seed weights
            # is a level (no quality 0 to say so): a store written with them names their digest
            fixed = load_codec(spec.arch, quality=quality, pretrained=False, **common, **spec.model_config)
            codec = fixed if fixed.digest == spec.digest else codec
    else:
        codec = load_codec(spec.arch, quality=quality, pretrained=False, **common, **spec.model_config)
    if codec.digest != spec.digest:
        raise WeightsMismatchError(
            f"weights {codec.digest[:16]} found for {spec.arch} quality {spec.quality} differ from "
            f"the store's {spec.digest[:16]}; pass the checkpoint the store was written with "
            f"(with the halo prior it was coded with beside it, where it has a halo)")
    return codec


