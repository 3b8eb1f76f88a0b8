"""Shared test helpers: paths, one Pipeline per session, structlog reset between tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from fhir_adapters.intake import PatientGroup, read_path
from redflags.pipeline import Pipeline

from .pg_server import pg_server, pg_url  # noqa: F401  (fixtures: a test PostgreSQL, tests/pg_server.py)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def fixture_patients() -> list[PatientGroup]:
    """Every patient of every fixture file that reads (the files that test bad input are left out)."""
    found: list[PatientGroup] = []
    for path in sorted(FIXTURES.rglob("*.json")):
        if path.name.endswith(".expected.json"):
            continue
        try:
            intake = read_path(path)
        except Exception:  # files that test bad input: not what the callers are about
            continue
        found.extend(intake.patients.values())
    return found


def slow_n(default: int = 100_000) -> int:
    """Patients for a ``slow`` test: REDFLAGS_SLOW_N (pyproject's marker: CI runs fewer), else ``default``."""
    raw = os.environ.get("REDFLAGS_SLOW_N", "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 20_000:
        raise pytest.UsageError(f"REDFLAGS_SLOW_N must be a whole number >= 20000, got {raw!r}")
    return int(raw)


@pytest.fixture(scope="session")
def pipeline() -> Pipeline:
    return Pipeline()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


@pytest.fixture(autouse=True)
def _no_site_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own REDFLAGS_CONFIG must not change what the tests (and their subprocesses) see."""
    monkeypatch.delenv("REDFLAGS_CONFIG", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _no_user_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``redflags serve`` without ``--state`` keeps its stores in the user's state directory: in
    the tests (and their subprocesses, module-scoped services included: session scope sets it
    first) a temporary one, never the developer's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-state"))
        yield
