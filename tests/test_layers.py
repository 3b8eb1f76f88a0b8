"""The layers hold: read every import (AST, no execution) of the lower packages.

``engine/`` is the bottom layer and imports nothing from ``rulesets``, ``fhir_adapters`` or
``redflags`` -- not at run time, not under ``TYPE_CHECKING``, not inside a function, not by a
relative import that climbs out of the package, not by ``importlib.import_module("...")``.
``fhir_adapters/`` imports nothing from ``redflags`` or ``rulesets`` (the application composes
the adapters and hands them what the rules know, such as the value-set folder); ``rulesets/``
import only ``engine``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: package -> top-level packages it must never import (the layering contract, as data).
FORBIDDEN: dict[str, frozenset[str]] = {
    "engine": frozenset({"rulesets", "fhir_adapters", "redflags"}),
    "fhir_adapters": frozenset({"redflags", "rulesets"}),
    "rulesets": frozenset({"fhir_adapters", "redflags"}),
}

_DYNAMIC_IMPORTERS = frozenset({"import_module", "__import__"})


def _package_parts(path: Path, root: Path) -> list[str]:
    """The dotted package (not module) a file belongs to, as parts: ``engine/x.py`` -> [engine]."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return parts[:-1]  # engine/x.py and engine/__init__.py both belong to package engine


def imported_modules(source: str, package: list[str]) -> list[tuple[int, str]]:
    """Every module a source names in an import, absolute and dotted, with its line.

    A relative import that climbs above the top-level package yields ``"<escapes>"``.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):  # every block: TYPE_CHECKING, functions, try/except
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
                continue
            up = node.level - 1
            if up > len(package):
                found.append((node.lineno, "<escapes>"))
                continue
            base = package[: len(package) - up]
            if node.module:
                found.append((node.lineno, ".".join([*base, node.module])))
            else:
                found += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            arg = node.args[0]
            if name in _DYNAMIC_IMPORTERS and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return sorted(found)


def violations(package: str, root: Path = ROOT) -> list[str]:
    """``file:line imports module`` for each import the package's contract forbids."""
    files = sorted((root / package).rglob("*.py"))
    assert files, f"no Python files under {package}/: the check would pass vacuously"
    bad: list[str] = []
    for path in files:
        for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_parts(path, root)):
            top = module.split(".", 1)[0]
            if top in FORBIDDEN[package] or top == "<escapes>":
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The reader is not vacuous: each disguise of an upward import is caught, none invented."""
    (tmp_path / "engine" / "sub").mkdir(parents=True)
    (tmp_path / "engine" / "__init__.py").write_text("from . import dsl\nfrom .sub import x\n")
    (tmp_path / "engine" / "sub" / "__init__.py").write_text("")
    (tmp_path / "engine" / "sub" / "deep.py").write_text(
        "from ...rulesets import meta\nfrom .. import alert\nfrom .... import beyond_the_root\n"
    )
    (tmp_path / "engine" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rulesets.meta import Code\n"
        "import redflags.config\n"
        "def f():\n    from fhir_adapters import facts\n"
        "from .. import rulesets\n"
        "from ..fhir_adapters.output import x\n"
        "import importlib\nimportlib.import_module('redflags.cli')\n"
        "import rulesets_other\n"  # a different package whose name merely starts alike
    )
    assert violations("engine", tmp_path) == [
        "engine/bad.py:3 imports rulesets.meta",
        "engine/bad.py:4 imports redflags.config",
        "engine/bad.py:6 imports fhir_adapters",
        "engine/bad.py:7 imports rulesets",
        "engine/bad.py:8 imports fhir_adapters.output",
        "engine/bad.py:10 imports redflags.cli",
        "engine/sub/deep.py:1 imports rulesets",
        "engine/sub/deep.py:3 imports <escapes>",
    ]
