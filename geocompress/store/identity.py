"""The codec's identity at the store's boundary: one vocabulary in code, the old names on disk.

In code a codec is named as :class:`geocompress.codec.TileCodec` names it: ``arch`` (the
architecture), ``digest`` (the weights' SHA-256), ``quality`` and ``config``. Stores (root
attribute ``geocompress``) and their STAC items were written with ``model`` and
``weights_digest`` for the first two, and must keep opening and verifying (their attributes are
digest-covered), so those names stay on disk. :func:`from_stored` maps a dict into the codec's
names when reading, :func:`to_stored` back when writing; no other module spells the stored names.
"""

from __future__ import annotations

from typing import Any

# codec name -> the name stores and STAC items keep it under
_STORED = {"arch": "model", "digest": "weights_digest"}
_CODEC = {stored: name for name, stored in _STORED.items()}

IDENTITY = ("arch", "digest", "quality")  # what names a codec (a store records all three)


def from_stored(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` in the codec's vocabulary: ``model`` -> ``arch``, ``weights_digest`` ->
    ``digest``; every other key unchanged. Where both names are given the stored one wins (as
    stores have always read them).

    Args:
        meta: a store's root attributes, a store-style codec dict, or a dict already in the
            codec's names (returned as a copy).

    Returns:
        A new dict with the codec's names.
    """
    out = {}
    for key, value in meta.items():
        name = _CODEC.get(key, key)
        if key in _STORED and _STORED[key] in meta:
            continue  # the stored name is given too, and wins
        out[name] = value
    return out


def to_stored(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` under the names a store or STAC item writes: ``arch`` -> ``model``, ``digest``
    -> ``weights_digest``; every other key (and its order) unchanged.

    Args:
        meta: a dict in the codec's vocabulary (see :func:`from_stored`).

    Returns:
        A new dict with the stored names.
    """
    return {_STORED.get(key, key): value for key, value in meta.items()}


def stored_name(name: str) -> str:
    """The stored name of one identity field, for messages that must name the attribute.

    Args:
        name: a codec-vocabulary key (``arch``, ``digest``, ``quality``, ...).

    Returns:
        The attribute name a store keeps it under.
    """
    return _STORED.get(name, name)
