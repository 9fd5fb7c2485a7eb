"""Imports flow one way: rewards -> assets -> envs -> wrappers -> agents / theory -> experiments."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "llm_gym"
RANK = {
    "rewards": 0,
    "assets": 1,
    "envs": 2,
    "wrappers": 3,
    "agents": 4,
    "theory": 4,
    "experiments": 5,
    "cli": 6,
}


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "llm_gym":
                continue
            names = parts[1:2] or [alias.name for alias in node.names]
            layers.update(n for n in names if n in RANK)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "llm_gym" and len(parts) > 1 and parts[1] in RANK:
                    layers.add(parts[1])
    return layers


MODULES = sorted(
    p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0].removesuffix(".py") in RANK
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_imports_a_higher_layer(path):
    layer = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    for target in imported_layers(path):
        assert RANK[target] < RANK[layer] or target == layer, f"{layer} imports {target}"
