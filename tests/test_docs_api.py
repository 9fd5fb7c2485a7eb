"""The API reference covers every public name: each name in a module's ``__all__`` gets a page entry.

The Sphinx build (``python -m sphinx -W ... docs docs/_build/html``) checks the same on the
built site, and also that every class and function has a docstring; this test runs the
page generator alone, in seconds, without Sphinx's build.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "docs"))
import _api  # noqa: E402


def test_every_module_has_a_page_and_a_docstring():
    names = _api.module_names()
    assert "llm_gym.wrappers.attention_credit" in names
    assert not any(name.endswith("__main__") for name in names)  # those run when imported
    for name in names:
        assert importlib.import_module(name).__doc__, f"{name} has no docstring"
        assert f"   {name}" in _api.index_page()


@pytest.mark.parametrize("module_name", _api.module_names())
def test_every_public_name_is_documented_once(module_name):
    module = importlib.import_module(module_name)
    page = _api.page(module_name)
    for name in _api.public_names(module):
        home = _api.home(module_name, name)
        assert name in _api.public_names(importlib.import_module(home))
        target = f"{home}.{name}"
        if home == module_name:
            assert f":: {target}\n" in page, f"{target} has no directive on its page"
        else:
            assert f"<{target}>`" in page, f"{module_name}.{name} does not link to {target}"
            assert f":: {target}\n" in _api.page(home)
