"""The package's weights index, readable without torch (the CLI's ``--help`` lists it)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

# the codec users get without --arch / a choice's arch: the variable-rate MGSSNet (shipped by
# pipelines/ship_vr.py once its measured curve passed issue 35's gate); the fixed-rate ladder
# q1-q4 stays loadable by name ("mgssnet") and its stores keep decoding
DEFAULT_ARCH = "mgssnet-vr"


def shipped_index() -> dict[str, Any]:
    """The package's weights index (``geocompress/weights/index.json``): arch -> qualities."""
    ref = resources.files("geocompress") / "weights" / "index.json"
    if not ref.is_file():
        return {}
    return json.loads(ref.read_text())


def is_variable_rate_entry(entry: dict) -> bool:
    """Whether a weights-index entry ships one variable-rate file for every level (``file``,
    ``digest``, ``levels``, ``default`` level, an optional ``halo_prior``) rather than one
    fixed-rate file per quality (``qualities``).

    Args:
        entry: ``shipped_index()[arch]``.

    Returns:
        True for a variable-rate entry.
    """
    return "levels" in entry and "qualities" not in entry
