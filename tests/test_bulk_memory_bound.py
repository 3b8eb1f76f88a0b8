"""Peak memory of a real `redflags replay` process does not grow with the export (issue 11 item 2).

A split-by-type export (``bench.bulk_memory``: TYPE.N.ndjson, patients generated one at a time)
is replayed by a child process at a small and a 10x larger number of patients; its peak RSS
(``wait4``) must stay within ``RATIO`` of the small run's. Memory ratios only, never times.

The default run uses 300 and 3,000 patients (3.6 and 36 MiB of NDJSON: three partitions,
so grouping the whole input would show). The large run takes minutes: it is marked ``slow``
(deselected by default) and scaled by REDFLAGS_SLOW_N (default 100,000; CI runs 20,000):

    .venv/bin/python -m pytest -m slow tests/test_bulk_memory_bound.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bulk_memory import measure

from .conftest import slow_n

#: Issue 11: the largest run's peak RSS within 1.5x of the smallest's.
RATIO = 1.5
#: NDJSON lines per file: several files per resource type even in the small runs.
PER_FILE = 2_000


def peak_ratio(small: int, large: int, tmp: Path) -> tuple[dict, dict]:
    runs = [measure(n, PER_FILE, tmp) for n in (small, large)]
    for run in runs:  # each replay finished and printed every patient once
        assert run["status"] == 0 and run["lines"] == run["patients"], run
    return runs[0], runs[1]


def test_peak_rss_is_flat_from_300_to_3000_patients(tmp_path: Path) -> None:
    small, large = peak_ratio(300, 3_000, tmp_path)
    assert large["input_mib"] > 8 * small["input_mib"]
    assert large["peak_rss_mib"] <= RATIO * small["peak_rss_mib"], (small, large)
    assert list(tmp_path.glob("redflags-replay-*")) == []  # the replay's temporary folders are gone


@pytest.mark.slow
def test_peak_rss_is_flat_from_1000_to_large_n_patients(tmp_path: Path) -> None:
    small, large = peak_ratio(1_000, slow_n(), tmp_path)
    assert large["peak_rss_mib"] <= RATIO * small["peak_rss_mib"], (small, large)
