"""The package's weights index, readable without torch (the CLI's ``--help`` lists it)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def shipped_index() -> dict[str, Any]:
    """The package's weights index (``geocompress/weights/index.json``): arch -> qualities."""
    ref = resources.files("geocompress") / "weights" / "index.json"
    if not ref.is_file():
        return {}
    return json.loads(ref.read_text())
