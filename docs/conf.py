"""Sphinx configuration for the llm-gym documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.

The API pages under ``docs/api/`` are written at build time from each module's
``__all__`` (see ``_api.py``), and the build fails if a public name has no
documented object or no docstring, or if a reference to an llm_gym name does not
resolve (re-exports such as ``llm_gym.agents.TokenPPO`` resolve to the defining
module's entry). Nothing is fetched: no intersphinx, and the examples are not
executed here (``tests/test_docs_examples.py`` runs them).
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS))
sys.path.insert(0, str(DOCS.parent))

import _api  # noqa: E402
from sphinx.ext import napoleon  # noqa: E402

import llm_gym  # noqa: E402

project = "llm-gym"
author = "llm-gym contributors"
copyright = "llm-gym contributors, MIT licence"
release = llm_gym.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

html_theme = "furo"
html_title = f"llm-gym {release}"

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "separated"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# a reference to an llm_gym name that does not resolve is an error; references to other
# libraries stay plain text (no intersphinx: nothing is fetched)
nitpicky = True
# (and private bases, such as the one TokenRLOO and TokenGRPO share, have no page)
nitpick_ignore_regex = [(r"py:.*", r"(?!llm_gym\b).*"), (r"py:.*", r".*\._[^.]*")]


def _docstring_except_constants(app, what, name, obj, options, lines):
    """Napoleon's docstring processing, but not for constants and properties.

    Their docstrings are sentences (``#: info key: ...``, ``Always: ...``), which napoleon
    would read as ``type: description``.
    """
    if what not in ("data", "attribute", "property"):
        napoleon._process_docstring(app, what, name, obj, options, lines)


def setup(app):
    app.connect("builder-inited", _api.write_pages)
    app.connect("env-check-consistency", _api.check_coverage)
    app.connect("missing-reference", _api.resolve_reexport)
    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is napoleon._process_docstring:
            app.disconnect(listener.id)
    app.connect("autodoc-process-docstring", _docstring_except_constants)
