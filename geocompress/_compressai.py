"""Import CompressAI without its point-cloud half (issue 38, item 1: import only what is needed).

``import compressai`` (or any ``compressai.<submodule>``: Python runs the package's ``__init__``
first) imports *every* subpackage: ``compressai.transforms.point`` and the transform registry
import ``torch_geometric``, which imports ``torch._dynamo``: seconds of every CLI call's fixed
cost (``catalogs/figures-from-docstrings.md``), for point-cloud datasets and transforms the codec
never touches.

:func:`install` (run by ``import geocompress``, before anything imports CompressAI) makes the first
``import compressai...`` load the ``compressai`` package *without* running its ``__init__``: the submodules the codec uses
(``entropy_models``, ``ans``, ``layers``, ``models``, ``latent_codecs``, ...) import on demand as
usual, and so does every other one (``compressai.datasets``, ``compressai.zoo``: attribute access
imports the submodule, PEP 562), so nothing that uses CompressAI breaks. Two things differ, both
lazily filled: the transform registry (``compressai.registry.TRANSFORMS``) loads torchvision's and
torch_geometric's transforms the first time it is read, and ``compressai.__version__`` comes from
``compressai.version``. If CompressAI is already imported, nothing is done.

``compressai.entropy_models`` also imports ``scipy.stats`` (~0.8 s: ``scipy.special``,
``scipy.spatial``, ``scipy.optimize``, every distribution) for a single call,
``scipy.stats.norm.ppf`` in ``GaussianConditional.update()``, which a loaded checkpoint never
runs (its CDF tables are stored). So the light package puts a stand-in for ``scipy.stats`` in
``sys.modules`` (if nothing imported the real one yet) that imports the real module on its first
attribute read and hands every read on to it: ``update()``, ``from scipy.stats import x`` and
``scipy.stats.x`` behave as before, with the same numbers, only later.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
import types
from typing import Any, Callable

# the package's own top-level API (compressai/__init__.py, 1.2.x), which its submodules call
_SUBPACKAGES = ("datasets", "entropy_models", "latent_codecs", "layers", "losses", "models", "ops",
                "optimizers", "registry", "transforms", "typing", "zoo")


class _LazyTransforms(dict):
    """``compressai.registry.TRANSFORMS``: transforms registered by CompressAI's own modules
    at once, torchvision's and torch_geometric's on the first read."""

    _filled = False

    def _fill(self) -> None:
        if not self._filled:
            self._filled = True
            import torch_geometric.transforms
            import torchvision.transforms

            base = {**{k: v for k, v in torchvision.transforms.__dict__.items() if k[0].isupper()},
                    **{k: v for k, v in torch_geometric.transforms.__dict__.items()
                       if k[0].isupper()}}
            for k, v in base.items():  # registered names win, as when registered after
                dict.setdefault(self, k, v)

    def _reader(name: str) -> Callable:  # noqa: N805 - builds the methods below
        def method(self, *args: Any, **kwargs: Any) -> Any:
            self._fill()
            return getattr(dict, name)(self, *args, **kwargs)

        method.__name__ = name
        return method

    for _name in ("__getitem__", "__contains__", "__iter__", "__len__", "__repr__", "__eq__",
                  "get", "keys", "items", "values", "copy", "__or__", "__ror__"):
        locals()[_name] = _reader(_name)
    del _name, _reader


def _light_registry_transforms() -> types.ModuleType:
    mod = types.ModuleType("compressai.registry.transforms")
    mod.__doc__ = "geocompress's lazy stand-in for compressai.registry.transforms"
    transforms = _LazyTransforms()

    def register_transform(name: str):
        """Decorator for registering a transform."""

        def decorator(cls):
            dict.__setitem__(transforms, name, cls)
            return cls

        return decorator

    mod.TRANSFORMS, mod.register_transform = transforms, register_transform
    mod.__all__ = ["TRANSFORMS", "register_transform"]
    return mod


def _package_api(pkg: types.ModuleType) -> None:
    state = {"coder": "ans", "available": ["ans"]}
    try:
        import range_coder  # noqa: F401 - optional, as in compressai/__init__.py

        state["available"].append("rangecoder")
    except ImportError:
        pass

    def set_entropy_coder(entropy_coder: str) -> None:
        """Specifies the default entropy coder used to encode the bit-streams."""
        if entropy_coder not in state["available"]:
            raise ValueError(f'Invalid entropy coder "{entropy_coder}", choose from'
                             f'({", ".join(state["available"])}).')
        state["coder"] = entropy_coder

    def get_entropy_coder() -> str:
        """Return the name of the default entropy coder used to encode the bit-streams."""
        return state["coder"]

    def available_entropy_coders() -> list[str]:
        """Return the list of available entropy coders."""
        return state["available"]

    def __getattr__(name: str) -> Any:  # noqa: N807 - PEP 562
        if name in _SUBPACKAGES or name == "ans":
            return importlib.import_module(f"compressai.{name}")
        if name in ("__version__", "git_version"):
            return getattr(importlib.import_module("compressai.version"), name)
        raise AttributeError(f"module 'compressai' has no attribute {name!r}")

    pkg.set_entropy_coder, pkg.get_entropy_coder = set_entropy_coder, get_entropy_coder
    pkg.available_entropy_coders, pkg.__getattr__ = available_entropy_coders, __getattr__
    pkg.__all__ = [*_SUBPACKAGES, "available_entropy_coders", "get_entropy_coder",
                   "set_entropy_coder"]
    pkg._geocompress_light = True


class _LazyModule(types.ModuleType):
    """A module imported for real on its first attribute read (``__spec__`` and the other module
    attributes aside, which the import system reads): then the real one replaces it in
    ``sys.modules`` and in its parent package, and this one forwards to it."""

    def _real(self) -> types.ModuleType:
        real = self.__dict__.get("_geocompress_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_geocompress_real"] = real
            parent, _, child = self.__name__.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is self:
                setattr(sys.modules[parent], child, real)
        return real

    def __getattr__(self, name: str) -> Any:  # also __path__: a submodule's import loads it
        return getattr(self._real(), name)

    def __dir__(self) -> list[str]:
        return dir(self._real())


def _defer(name: str) -> None:
    """``import name`` gives a :class:`_LazyModule` until an attribute of it is read (nothing is
    done if it is imported already or cannot be found)."""
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)  # imports the parent package (scipy: ~10 ms)
    except ImportError:
        return
    if spec is None:
        return
    module = _LazyModule(name)
    module.__spec__, module.__file__ = spec, spec.origin
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)


class _LightLoader(importlib.abc.Loader):
    """Creates the ``compressai`` package with its ``__path__``, without running its
    ``__init__``."""

    def create_module(self, spec):  # noqa: ANN001 - default module creation
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        _package_api(module)
        _defer("scipy.stats")  # for compressai.entropy_models: norm.ppf in update() only
        sys.modules.setdefault("compressai.registry.transforms", _light_registry_transforms())


class _Finder(importlib.abc.MetaPathFinder):
    """Finds ``compressai`` the first time it is imported, as the light package; then leaves
    ``sys.meta_path`` (so ``import geocompress`` itself registers nothing in ``sys.modules``)."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001 - finder protocol
        if name != "compressai":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("compressai")
        if spec is None or not spec.submodule_search_locations:
            return spec
        spec.loader = _LightLoader()
        return spec


def install() -> bool:
    """Make the next ``import compressai`` (or of any of its submodules) load the light package.

    Returns:
        True if installed; False if CompressAI is already imported (too late: nothing is
        changed) or this was done already.
    """
    if "compressai" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _Finder())
    return True
