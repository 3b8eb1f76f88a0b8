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


# -- FHIR JSON in fhir_adapters only (issue 13 item 4) ------------------------------------------
#: Modules of redflags/ allowed to spell "resourceType" (file -> why). Empty: FHIR JSON is read
#: and written in fhir_adapters; the service and the CLI compose.
FHIR_JSON_ALLOWED: dict[str, str] = {}
#: HTTP client libraries: only fhir_adapters talks to FHIR servers with them.
HTTP_CLIENTS = frozenset({"requests", "httpx", "urllib3", "aiohttp", "http.client", "urllib.request"})
#: Modules of redflags/ allowed an HTTP client (file -> why): none of them talks to FHIR.
HTTP_ALLOWED: dict[str, str] = {
    "redflags/service/auth/trusted_clients.py": "fetches trusted clients' JWK Sets (JSON Web Keys), not FHIR",
}


def fhir_json_spelled(package: str, root: Path = ROOT) -> list[str]:
    """``file:line`` of every string constant "resourceType" (f-string parts too) under ``package``."""
    found: list[str] = []
    for path in sorted((root / package).rglob("*.py")):
        name = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == "resourceType":
                found.append(f"{name}:{node.lineno}")
    return found


def http_clients_imported(package: str, root: Path = ROOT) -> list[str]:
    """``file:line imports X`` for every HTTP client library imported under ``package``."""
    found: list[str] = []
    for path in sorted((root / package).rglob("*.py")):
        name = path.relative_to(root).as_posix()
        for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_parts(path, root)):
            if any(module == lib or module.startswith(lib + ".") for lib in HTTP_CLIENTS):
                found.append(f"{name}:{line} imports {module}")
    return found


def test_fhir_json_is_spelled_in_fhir_adapters_only() -> None:
    print("allowed to spell resourceType:", FHIR_JSON_ALLOWED or "none")
    found = [hit for hit in fhir_json_spelled("redflags") if hit.split(":")[0] not in FHIR_JSON_ALLOWED]
    assert found == [], "FHIR JSON belongs in fhir_adapters (a module named for what it reads or writes)"


def test_only_fhir_adapters_talk_to_fhir_servers() -> None:
    print("allowed an HTTP client:", HTTP_ALLOWED)
    found = [hit for hit in http_clients_imported("redflags") if hit.split(":")[0] not in HTTP_ALLOWED]
    assert found == []


def test_the_fhir_checks_see_what_they_look_for(tmp_path: Path) -> None:
    (tmp_path / "redflags" / "sub").mkdir(parents=True)
    (tmp_path / "redflags" / "sub" / "x.py").write_text(
        "import requests\nfrom httpx import Client\nimport urllib3.util\n"
        'def f(doc):\n    return doc.get("resourceType"), {"resourceType": "Flag"}, f"{doc}resourceType"\n'
        '"""resourceType in a docstring is prose"""\n'
    )
    assert fhir_json_spelled("redflags", tmp_path) == ["redflags/sub/x.py:5"] * 3  # the docstring is not
    assert http_clients_imported("redflags", tmp_path) == [
        "redflags/sub/x.py:1 imports requests",
        "redflags/sub/x.py:2 imports httpx",
        "redflags/sub/x.py:3 imports urllib3.util",
    ]


# -- inside redflags/: the rooms (issue 13 item 7) -----------------------------------------------
#: folder of redflags/ -> (modules its files must never import, folders exempt from the rule).
#: The CLI is the top: nothing else imports it (the service least of all). The process pool is
#: generic (it knows nothing of what it hosts), and the stores are the ground floor.
ROOM_FORBIDDEN: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "redflags": (("redflags.cli",), ("redflags/cli",)),
    "redflags/service": (("redflags.cli",), ()),
    "redflags/workers": (("redflags.cli", "redflags.service", "redflags.pipeline", "redflags.stateful"), ()),
    "redflags/delivery": (("redflags.cli", "redflags.service", "redflags.replay"), ()),
    "redflags/state": (("redflags.cli", "redflags.service", "redflags.delivery", "redflags.replay"), ()),
}


def _named_modules(source: str, package: list[str]) -> list[tuple[int, str]]:
    """``imported_modules`` plus ``package.name`` for each ``from package import name``
    (``from redflags import cli`` names ``redflags.cli``)."""
    found = imported_modules(source, package)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return sorted(found)


def room_violations(folder: str, root: Path = ROOT) -> list[str]:
    """``file:line imports module`` for each import ``ROOM_FORBIDDEN[folder]`` forbids."""
    forbidden, exempt = ROOM_FORBIDDEN[folder]
    files = sorted((root / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/: the check would pass vacuously"
    bad: list[str] = []
    for path in files:
        where = path.relative_to(root).as_posix()
        if any(where.startswith(f"{e}/") for e in exempt):
            continue
        for line, module in _named_modules(path.read_text(encoding="utf-8"), _package_parts(path, root)):
            if any(module == f or module.startswith(f"{f}.") for f in forbidden):
                bad.append(f"{where}:{line} imports {module}")
    return sorted(set(bad))


@pytest.mark.parametrize("folder", sorted(ROOM_FORBIDDEN))
def test_rooms_import_only_downward(folder: str) -> None:
    assert room_violations(folder) == []


def test_the_room_check_sees_the_cli_imported_from_below(tmp_path: Path) -> None:
    """Not vacuous: an import of the CLI from outside it is caught in each form; the CLI's own are not."""
    (tmp_path / "redflags" / "cli").mkdir(parents=True)
    (tmp_path / "redflags" / "service").mkdir()
    (tmp_path / "redflags" / "cli" / "__init__.py").write_text("from redflags.cli import replay\n")
    (tmp_path / "redflags" / "spark.py").write_text(
        "def f():\n    from redflags.cli import _renderer\nfrom redflags import cli\nimport redflags.client\n"
    )
    (tmp_path / "redflags" / "service" / "app.py").write_text("import redflags.cli.serve\n")
    assert room_violations("redflags", tmp_path) == [
        "redflags/service/app.py:1 imports redflags.cli.serve",
        "redflags/spark.py:2 imports redflags.cli",
        "redflags/spark.py:2 imports redflags.cli._renderer",
        "redflags/spark.py:3 imports redflags.cli",
    ]
    only_service = ["redflags/service/app.py:1 imports redflags.cli.serve"]
    assert room_violations("redflags/service", tmp_path) == only_service
