"""Numeric precision of the transforms (``g_a``, ``g_s``, ``h_a``): what runs where, and how fast.

Only the transforms follow the precision mode. The networks that choose the entropy coder's
distributions (hyper decoder, context model, entropy parameters) always run in exact fixed point
(:mod:`.exact`), and the hyper latent's dequantization is done in float64 from the checkpoint's
medians, so a string written in any mode decodes correctly in any other mode, on any device.
What a mode changes is the decoded pixels' last bits: only ``float64`` is pixel-identical across
machines, batch sizes and thread counts.

Modes:

* ``float64``: the exact mode (reference; slowest).
* ``float32``: float32 weights, channels-last activations on CPU.
* ``bfloat16``: float32 weights, channels-last, ``torch.autocast`` to bfloat16 (on CPUs with
  AMX-BF16 or AVX512-BF16, and CUDA devices that support it);
* ``float16``: autocast to float16 (CUDA only);
* ``float32-onnx``: ``g_a`` and ``g_s`` in float32 through ONNX Runtime (CPU; the optional extra
  ``pip install geocompress[onnx]``), ``h_a`` as ``float32``: on CPUs without bf16 about 1.6x
  faster than PyTorch's float32 at the same PSNR (``catalogs/cpu_speed.md``). Each transform is
  exported once per weights and cached in ``~/.cache/geocompress/onnx`` (``GEOCOMPRESS_CACHE``);
  a transform that cannot be exported runs in PyTorch's float32.
* ``auto``: the fastest mode the device runs well: ``bfloat16`` where the CPU or GPU supports it,
  else ``float16`` on CUDA, else ``float32-onnx`` where ONNX Runtime is installed (and
  ``GEOCOMPRESS_ONNX`` is not ``0``), else ``float32``. Its measured PSNR against ``float64`` is in
  ``catalogs/benchmarks.md`` (``benchmarks/codec_speed.py``). A store's readers (``decompress``,
  the lazy view) resolve it on CPU to ``float32-onnx`` where ONNX Runtime is installed, whatever
  the CPU, decoded without torch (:func:`geocompress.scene.workers.get_decoder`): every reader
  of a store then gives the same pixels and none pays torch's start-up.

The CPU's class (:func:`cpu_class`: ``AMX``, ``AVX-512``, ``AVX2`` or ``other``) is read from the
CPU's flags; ``GEOCOMPRESS_CPU_CLASS`` (``amx``, ``avx512``, ``avx512-bf16``, ``avx2``, ``other``)
overrides it, so that ``auto`` resolves as it would on another class of CPU. It is how an AVX2-only
CPU is emulated for measurement on a larger one, with ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2`` set before torch is imported (``benchmarks/cpu_speed.py
--emulate-avx2``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .numpy_decoder import cache_root, gains, runtime_available

PRECISIONS = ("auto", "bfloat16", "float16", "float32", "float32-onnx", "float64")
ONNX = "float32-onnx"
ONNX_OPSET = 17
_EXPORT_LOCK = threading.Lock()


CPU_CLASSES = {"amx": ("AMX", True), "avx512-bf16": ("AVX-512", True), "avx512": ("AVX-512", False),
               "avx2": ("AVX2", False), "other": ("other", False)}


@functools.lru_cache(maxsize=None)
def _cpu_flags() -> frozenset[str] | None:
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:  # not Linux
        return None


@functools.lru_cache(maxsize=None)
def _cpu_kind() -> str:
    """One of CPU_CLASSES' keys: GEOCOMPRESS_CPU_CLASS if set, else what the CPU has."""
    forced = os.environ.get("GEOCOMPRESS_CPU_CLASS", "").strip().lower()
    if forced:
        if forced not in CPU_CLASSES:
            raise ValueError(f"GEOCOMPRESS_CPU_CLASS must be one of {sorted(CPU_CLASSES)}, "
                             f"got {forced!r}")
        return forced
    flags = _cpu_flags()
    if flags is None:  # ask torch what its kernels were dispatched for
        cap = torch.backends.cpu.get_cpu_capability()
        return {"AMX": "amx", "AVX512_BF16": "avx512-bf16", "AVX512": "avx512",
                "AVX2": "avx2"}.get(cap, "other")
    if "amx_bf16" in flags:
        return "amx"
    if "avx512f" in flags:
        return "avx512-bf16" if "avx512_bf16" in flags else "avx512"
    return "avx2" if "avx2" in flags else "other"


def cpu_class() -> str:
    """``AMX``, ``AVX-512``, ``AVX2`` or ``other``: the widest matrix / vector unit of this CPU
    (or of the class GEOCOMPRESS_CPU_CLASS names)."""
    return CPU_CLASSES[_cpu_kind()][0]


def cpu_bf16_supported() -> bool:
    """Whether this CPU does bfloat16 matrix work natively (AMX-BF16 or AVX512-BF16): without
    either, oneDNN emulates bfloat16 and it is slower than float32."""
    return CPU_CLASSES[_cpu_kind()][1]


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The concrete mode ``precision`` means on ``device``.

    Args:
        precision: one of :data:`PRECISIONS`; ``auto`` is bfloat16 on GPUs and CPUs that have it,
            else ONNX Runtime float32 where installed, else float32.
        device: where the transforms run.

    Returns:
        The mode, never ``auto``.

    Raises:
        ValueError: an unknown mode, or one the device cannot run (float16 on a CPU).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if precision == "auto":
        if cuda:
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        if cpu_bf16_supported():
            return "bfloat16"
        return ONNX if onnx_available() else "float32"
    if precision == "float16" and not cuda:
        raise ValueError("precision='float16' runs on CUDA only; on CPU use 'bfloat16' or 'float32'")
    if precision == ONNX:
        if cuda:
            raise ValueError(f"precision={ONNX!r} runs on CPU only")
        if not onnx_available(ignore_env=True):
            raise ValueError(f"precision={ONNX!r} needs ONNX Runtime: pip install geocompress[onnx]")
    return precision


def onnx_available(ignore_env: bool = False) -> bool:
    """Whether ONNX Runtime (and the ``onnx`` package torch exports with) can be imported.

    Args:
        ignore_env: answer for the installation alone; by default ``GEOCOMPRESS_ONNX=0`` makes
            the answer False, so that ``auto`` keeps PyTorch.

    Returns:
        True where the ``float32-onnx`` mode can run.
    """
    if not ignore_env and not runtime_available():  # GEOCOMPRESS_ONNX=0, read in one place
        return False
    return _onnx_importable()


@functools.lru_cache(maxsize=None)
def _onnx_importable() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_cache() -> Path:
    return cache_root() / "onnx"


class OnnxTransform:
    """One transform (``g_a`` or ``g_s``) run by ONNX Runtime in float32 on CPU.

    The graph is exported from the module's float32 weights with dynamic batch, height and width,
    once per weights (cached on disk under a digest of the weights, the module's structure and
    the torch version), and loaded on first use with as many threads as torch has then. A
    variable-rate model's gain stays in PyTorch (its scale changes with the rate): only the
    layers are exported."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.gained = hasattr(module, "_scale") and hasattr(module, "_side")
        self.layers = torch.nn.Sequential(*module.children()) if self.gained else module
        self.session = None

    def __getstate__(self) -> dict:  # a codec sent to another process opens its own session
        return {**self.__dict__, "session": None}

    def graph(self, fresh: bool = False) -> bytes:
        """The layers' float32 ONNX graph (dynamic batch, height and width), exported once per
        weights and cached.

        Args:
            fresh: export again (replacing the cached graph), e.g. when the cached one does not
                take the input ``x`` (damaged, or written by something else).

        Returns:
            The serialized graph.
        """
        layers = self.layers
        h = hashlib.sha256(f"{torch.__version__} {ONNX_OPSET} {layers!r}".encode())
        for k, v in layers.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
        path = _onnx_cache() / f"{h.hexdigest()[:24]}.onnx"
        with _EXPORT_LOCK:  # torch's exporter is not thread-safe (a view decodes chunks in threads)
            if path.exists() and not fresh:
                return path.read_bytes()
            return self._export(layers, path)

    @staticmethod
    def _export(layers: torch.nn.Module, path: Path) -> bytes:
        import torch.onnx

        cin = next(m for m in layers.modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))).in_channels
        example = torch.zeros(1, cin, 32, 32)
        copy = float32_copy(layers)
        buf = io.BytesIO()
        # a caller's autocast would trace reduced-precision casts into a float32 graph
        with warnings.catch_warnings(), torch.autocast(device_type="cpu", enabled=False):
            warnings.simplefilter("ignore")
            torch.onnx.export(copy, (example,), buf, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "b", 2: "h", 3: "w"},
                                            "y": {0: "b", 2: "h", 3: "w"}})
        data = buf.getvalue()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError:
            pass  # a read-only home: export again next time
        return data

    def _session(self):
        import onnxruntime as rt

        so = rt.SessionOptions()
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        so.inter_op_num_threads = 1
        so.graph_optimization_level = rt.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = rt.InferenceSession(self.graph(), so, providers=["CPUExecutionProvider"])
        if [i.name for i in session.get_inputs()] != ["x"]:  # a cached graph that is not ours
            session = rt.InferenceSession(self.graph(fresh=True), so,
                                          providers=["CPUExecutionProvider"])
        return session

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is None:
            self.session = self._session()
        arr = x.detach().to(torch.float32).contiguous().numpy()
        if self.gained and self.module._side == "in":
            arr = arr * self._gains(arr.shape[0])
        out = self.session.run(None, {"x": np.ascontiguousarray(arr, dtype=np.float32)})[0]
        if self.gained and self.module._side == "out":
            out = out * self._gains(out.shape[0])
        return torch.from_numpy(out)

    def _gains(self, n: int) -> np.ndarray:
        """The gained transform's vectors at the model's rate, for a batch of ``n``."""
        rate = self.module._rate
        if rate.level is None:
            raise RuntimeError("variable-rate model used before set_rate(): choose a rate first")
        levels = rate.level.detach().cpu().numpy()
        if levels.shape[0] not in (1, n):
            raise RuntimeError(f"rate set for {levels.shape[0]} samples, transform got {n}")
        owner = rate.owner
        table = owner.log_inverse_gain if self.module._side == "in" else owner.log_gain
        return gains(table.detach().float().cpu().numpy(), np.broadcast_to(levels, (n,)))


def float32_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A float32, contiguous, eval-mode copy of ``module`` (what ONNX graphs are exported from
    and checked against), leaving the codec's own module as it is.

    Args:
        module: a transform.

    Returns:
        The copy.
    """
    import copy

    return copy.deepcopy(module).to(dtype=torch.float32, memory_format=torch.contiguous_format).eval()


def weight_dtype(precision: str) -> torch.dtype:
    """The dtype the model's weights are held in: reduced modes autocast from float32 weights,
    so the entropy models' parameters (quantiles, scale table) never lose bits.

    Args:
        precision: a concrete mode (:func:`resolve_precision`).

    Returns:
        float64 for the exact mode, else float32.
    """
    return torch.float64 if precision == "float64" else torch.float32


class Transforms:
    """Runs a model's transforms in one precision mode; returns float32 / float64 tensors."""

    def __init__(self, model: torch.nn.Module, precision: str, device: torch.device) -> None:
        self.precision = precision
        self.device = device
        self.channels_last = precision != "float64" and device.type == "cpu"
        self.autocast = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(precision)
        self.dtype = weight_dtype(precision)
        # the transforms ONNX Runtime runs (each knows its module: matched by identity, which
        # pickling a codec preserves); one that fails is dropped and runs in PyTorch
        self.onnx: list[OnnxTransform] = []
        if precision == ONNX:
            self.onnx = [OnnxTransform(m) for m in (getattr(model, "g_a", None),
                                                    getattr(model, "g_s", None)) if m is not None]
        if self.channels_last:
            for name in ("g_a", "g_s"):
                module = getattr(model, name, None)
                if module is not None:
                    module.to(memory_format=torch.channels_last)

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        if self.autocast is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=self.autocast):
            yield

    def __call__(self, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        runner = next((r for r in self.onnx if r.module is module), None)
        with torch.no_grad(), self._context():
            if runner is not None and x.ndim == 4:
                try:
                    return runner(x).to(self.dtype).contiguous()
                except Exception as e:  # noqa: BLE001 - any export / runtime failure: PyTorch
                    warnings.warn(f"ONNX Runtime could not run {type(module).__name__} "
                                  f"({type(e).__name__}: {e}); running it in PyTorch float32")
                    self.onnx.remove(runner)
            out = module(x)
        return out.to(self.dtype).contiguous()
