"""Write the API reference from each module's ``__all__`` and check that it is complete.

One page per module of ``llm_gym``. A public name is documented once, in the module
that defines it; a package or module that re-exports it links there. The check
runs after Sphinx has read every page: a name in some ``__all__`` without a
documented object, a class or function without a docstring, or a constant
without a doc comment (``#:``) is a warning, which ``-W`` makes an error. A reference
to a re-export (``llm_gym.rewards.RewardModel``) resolves to the defining module's entry.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from functools import cache
from pathlib import Path
from types import ModuleType

from sphinx.pycode import ModuleAnalyzer
from sphinx.util import logging

import llm_gym

API_DIR = Path(__file__).resolve().parent / "api"
logger = logging.getLogger(__name__)


@cache
def module_names() -> tuple[str, ...]:
    """Every importable module of llm_gym, ``__main__`` modules left out (they run)."""
    names = ["llm_gym"]
    for info in pkgutil.walk_packages(llm_gym.__path__, "llm_gym."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return tuple(sorted(names))


def public_names(module: ModuleType) -> list[str]:
    return [name for name in getattr(module, "__all__", []) if name != "__version__"]


@cache
def assigned_names(module_name: str) -> frozenset[str]:
    """Names bound by a top-level assignment in a module's source."""
    module = importlib.import_module(module_name)
    source = Path(inspect.getsourcefile(module)).read_text()
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return frozenset(names)


@cache
def home(module_name: str, name: str) -> str:
    """The module that documents ``module_name.name``: the one that defines it."""
    obj = getattr(importlib.import_module(module_name), name)
    listing = [
        m
        for m in module_names()
        if name in public_names(importlib.import_module(m))
        and getattr(importlib.import_module(m), name) is obj
    ]
    defined_in = getattr(obj, "__module__", None)
    if is_routine_or_class(obj) and defined_in in listing:
        return defined_in
    for m in listing:
        if name in assigned_names(m):
            return m
    return max(listing, key=len)


def is_routine_or_class(obj: object) -> bool:
    """A class or a function, also behind a decorator (``functools.lru_cache``)."""
    return inspect.isclass(obj) or inspect.isfunction(inspect.unwrap(obj))


def object_directive(module_name: str, name: str) -> str:
    obj = getattr(importlib.import_module(module_name), name)
    target = f"{module_name}.{name}"
    if inspect.isclass(obj):
        kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        return f".. {kind}:: {target}\n   :members:\n   :show-inheritance:\n"
    if inspect.isfunction(inspect.unwrap(obj)):
        return f".. autofunction:: {target}\n"
    short = isinstance(obj, str | int | float) and len(repr(obj)) < 60
    return f".. autodata:: {target}\n" + ("" if short else "   :no-value:\n")


def page(module_name: str) -> str:
    module = importlib.import_module(module_name)
    title = f"``{module_name}``"
    lines = [title, "=" * len(title), "", f".. automodule:: {module_name}", ""]
    own, elsewhere = [], []
    for name in public_names(module):
        (own if home(module_name, name) == module_name else elsewhere).append(name)
    for name in own:
        lines.append(object_directive(module_name, name))
    if elsewhere:
        lines += ["Also exported here, documented where they are defined:", ""]
        for name in elsewhere:
            lines.append(f"- :py:obj:`{module_name}.{name} <{home(module_name, name)}.{name}>`")
        lines.append("")
    return "\n".join(lines)


def index_page() -> str:
    lines = [
        "API reference",
        "=============",
        "",
        "Every public name of llm-gym, one page per module, generated from the",
        "docstrings (a module's public names are its ``__all__``). The packages",
        "re-export their most used names: ``from llm_gym.wrappers import",
        "AttentionCredit`` is the same class as",
        ":class:`llm_gym.wrappers.attention_credit.AttentionCredit`.",
        "",
        ".. toctree::",
        "   :maxdepth: 1",
        "",
    ]
    lines += [f"   {name}" for name in module_names()]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    # rewriting an unchanged page would make Sphinx read it again
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def write_pages(app) -> None:
    API_DIR.mkdir(exist_ok=True)
    wanted = {"index.rst"} | {f"{m}.rst" for m in module_names()}
    for stale in API_DIR.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    _write(API_DIR / "index.rst", index_page())
    for module_name in module_names():
        _write(API_DIR / f"{module_name}.rst", page(module_name))


def check_coverage(app, env) -> None:
    documented = env.get_domain("py").objects
    for module_name in module_names():
        module = importlib.import_module(module_name)
        if not inspect.getdoc(module):
            logger.warning("module %s has no docstring", module_name)
        for name in public_names(module):
            canonical = f"{home(module_name, name)}.{name}"
            if canonical not in documented:
                logger.warning("public name %s.%s is not documented", module_name, name)
                continue
            obj = getattr(module, name)
            if home(module_name, name) != module_name:
                continue
            if is_routine_or_class(obj):
                if not inspect.getdoc(obj):
                    logger.warning("%s has no docstring", canonical)
            elif ("", name) not in ModuleAnalyzer.for_module(module_name).find_attr_docs():
                logger.warning("%s has no doc comment (#: above it)", canonical)


def canonical(target: str, module: str | None = None) -> str | None:
    """Where ``target`` is documented when it names a re-export: ``llm_gym.agents.TokenPPO``
    is documented as ``llm_gym.agents.ppo.TokenPPO`` (an attribute after it is kept)."""
    candidates = [target] if module is None else [f"{module}.{target}", target]
    for candidate in candidates:
        parts = candidate.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module_name, name = ".".join(parts[:cut]), parts[cut]
            if module_name not in module_names():
                continue
            if name not in public_names(importlib.import_module(module_name)):
                break
            documented = home(module_name, name)
            if documented == module_name:
                break
            return ".".join([documented, name, *parts[cut + 1 :]])
    return None


def resolve_reexport(app, env, node, contnode):
    """Resolve a reference to a re-exported name (``llm_gym.rewards.RewardModel``) to its page."""
    if node.get("refdomain") != "py":
        return None
    target = canonical(node["reftarget"], node.get("py:module"))
    if target is None:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
    )
