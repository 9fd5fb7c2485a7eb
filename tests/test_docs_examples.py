"""Every Python example of the documentation site runs, as the README's do (test_readme.py).

The site's pages are docs/**/*.md and the files they include (results/README.md, the
embedded world's model card). A ```python block is executed on its own, in a fresh
namespace; other fences (```bash, ```text) are not run. Examples that need Ray are
skipped where it is not installed, unless LLM_GYM_REQUIRE_RAY is set (CI sets it).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
INCLUDED = [ROOT / "results" / "README.md", ROOT / "llm_gym" / "assets" / "MODEL_CARD.md"]
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts) + INCLUDED
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", flags=re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        fences = [m for m in FENCE.finditer(page.read_text()) if m.group(1).strip() == language]
        found += [(f"{page.relative_to(ROOT)}[{i}]", m.group(2)) for i, m in enumerate(fences)]
    return found


EXAMPLES = blocks("python")


def test_docs_have_examples():
    guides = {name.split("[")[0] for name, _ in EXAMPLES}
    assert len(EXAMPLES) >= 15
    assert all(str(p.relative_to(ROOT)) in guides for p in (DOCS / "guides").glob("*.md"))


def test_python_is_only_in_python_fences():
    """A Python example under another label (py, pycon, {code-block}) would never be run."""
    for page in PAGES:
        for match in FENCE.finditer(page.read_text()):
            label = match.group(1).strip()
            assert label in {"", "python", "bash", "text", "console"} or label.startswith(
                ("{toctree}", "{include}", "{eval-rst}")
            ), f"{page.relative_to(ROOT)}: fence labelled {label!r}"


@pytest.mark.parametrize("name,source", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_docs_example_runs(name, source):
    if not re.search(r"\bray\b", source, flags=re.I):
        exec(compile(source, name, "exec"), {"__name__": "docs_example"})
        return
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("LLM_GYM_REQUIRE_RAY"):
            pytest.fail(f'{name} needs Ray, which is not installed (pip install "llm-gym[ray]")')
        pytest.skip('needs Ray (pip install "llm-gym[ray]")')
    import ray

    started_here = not ray.is_initialized()
    try:
        exec(compile(source, name, "exec"), {"__name__": "docs_example"})
    finally:
        if started_here and ray.is_initialized():
            ray.shutdown()  # the example's local cluster; later tests start their own
