"""One local SparkSession per test module, skipped with the reason when Spark cannot start here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    """One local[2] SparkSession for the module (starting one costs seconds)."""
    try:
        from redflags.cli.spark import session

        manager = session("local[2]")
        started = manager.__enter__()
    except Exception as exc:  # no PySpark, no Java, no loopback: say so
        pytest.skip(f"Spark cannot start here: {type(exc).__name__}: {exc}")
    try:
        yield started
    finally:
        manager.__exit__(None, None, None)
