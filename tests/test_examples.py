"""The examples in the docstrings of the main entry points run, and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["geocompress.codec.choice", "geocompress.codec.tile_codec", "geocompress.scene.cluster",
           "geocompress.scene.compress", "geocompress.scene.mosaic", "geocompress.scene.view"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0
