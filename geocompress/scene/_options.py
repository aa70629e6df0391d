"""Flat keyword options folded into the values a scene function takes (shared internals).

``compress_scene(src, store, quality=2, workers=4)`` and
``compress_scene(src, store, CodecChoice(quality=2), cluster=ClusterChoice(workers=4))`` are
the same call: each keyword goes to the one value that has a field of its name, as
:func:`~geocompress.codec.load_codec` and :func:`~geocompress.training.trainer.train` accept
single fields beside their value.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any, Iterable, Mapping

# keywords that name a field of a value the function does not fold options into: say where to
ELSEWHERE = {"cog": "OutputSpec", "creation_options": "OutputSpec", "bands": "OutputSpec",
             "driver": "OutputSpec", "dtype": "OutputSpec", "overviews": "OutputSpec",
             "resampling": "OutputSpec", "allow_lossy": "OutputSpec"}


def fold(function: str, options: Mapping[str, Any], *values: Any,
         limit: Mapping[type, Iterable[str]] | None = None) -> tuple:
    """``values``, each with the keywords of ``options`` that name one of its fields replaced.

    Args:
        function: the caller's name, for the error.
        options: flat keyword options (``quality=2``, ``workers=4``, ``model_config={...}``:
            the old name of :class:`~geocompress.codec.CodecChoice`'s ``config``).
        *values: frozen dataclass values (a codec choice, a cluster choice, ...); no two share a
            field name.
        limit: per value type, the only fields a keyword may set (the others are not used by
            ``function``, so a keyword naming them is refused rather than ignored).

    Returns:
        The values in the order given, changed where a keyword named their field.

    Raises:
        TypeError: a keyword that names no field of any value (as Python refuses an unexpected
            keyword argument), with the value it belongs to where that is known.
    """
    options = dict(options)
    if "model_config" in options:  # the name compress_scene used for CodecChoice.config
        options["config"] = dict(options.pop("model_config") or {})
    changes: list[dict[str, Any]] = [{} for _ in values]
    names = [set(limit[type(v)]) if limit and type(v) in limit else {f.name for f in fields(v)}
             for v in values]
    for key, value in options.items():
        owner = next((i for i, n in enumerate(names) if key in n), None)
        if owner is None:
            where = (f" (a field of the output: pass output={ELSEWHERE[key]}({key}=...))"
                     if key in ELSEWHERE else "")
            raise TypeError(f"{function}() got an unexpected keyword argument {key!r}{where}")
        changes[owner][key] = value
    return tuple(replace(v, **c) if c else v for v, c in zip(values, changes))
