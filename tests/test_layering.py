"""Imports flow one way: rewards -> assets -> envs -> wrappers -> agents / theory -> experiments
and the world build (llm_gym/assets/build/, offline tooling that samples with the agents)."""

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
    "assets.build": 5,
    "cli": 6,
}


def layer_of(parts: list[str]) -> str | None:
    """The layer of the module ``llm_gym.<parts...>`` (None outside the layers)."""
    if parts[:2] == ["assets", "build"]:
        return "assets.build"
    return parts[0] if parts and parts[0] in RANK else None


def imported_layers(path: Path) -> set[str]:
    layers = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = node.module.split(".")
            if parts[0] != "llm_gym":
                continue
            # an imported name may be a module: `from llm_gym.assets import build`
            layers.update(layer_of(parts[1:] + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "llm_gym":
                    layers.add(layer_of(parts[1:]))
    return layers - {None}


MODULES = sorted(
    p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0].removesuffix(".py") in RANK
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_imports_a_higher_layer(path):
    layer = layer_of([p.removesuffix(".py") for p in path.relative_to(PACKAGE).parts])
    for target in imported_layers(path):
        assert RANK[target] < RANK[layer] or target == layer, f"{layer} imports {target}"
