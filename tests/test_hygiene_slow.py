"""`slow` tests are deselected by the default run and selected by ``-m slow`` (issue 13 item 9).

pyproject's addopts carry ``-m 'not slow'``; a ``-m`` on the command line replaces it, so CI and a
developer run them on purpose. One mechanism for the three: no environment switch gates them.
"""

from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT

SLOW = {
    "tests/test_engine.py::test_hundred_thousand_patients_in_flat_memory",
    "tests/test_bulk_memory_bound.py::test_peak_rss_is_flat_from_1000_to_large_n_patients",
    "tests/test_spark_replay.py::test_ctrl_c_on_spark_leaves_no_scratch",
}
FILES = sorted({node.split("::")[0] for node in SLOW})


def collected(*args: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args, *FILES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line for line in proc.stdout.splitlines() if "::" in line}


def test_the_default_run_leaves_the_slow_tests_out() -> None:
    default = collected()
    assert default and not default & SLOW


def test_minus_m_slow_selects_exactly_the_slow_tests() -> None:
    assert collected("-m", "slow") == SLOW
