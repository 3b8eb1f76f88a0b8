"""engine/ and fhir_adapters/ type-check under ``mypy --strict`` (issue 13 item 9).

The configuration is pyproject's ``[tool.mypy]`` (files, strict, the untyped durable-rules);
this runs it as part of the README's test command so CI keeps the two bottom layers typed.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def test_engine_and_fhir_adapters_are_clean_under_mypy_strict() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-color-output", "--no-error-summary"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mypy --strict found problems:\n{proc.stdout}{proc.stderr}"
