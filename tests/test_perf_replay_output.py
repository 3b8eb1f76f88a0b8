"""The replay's output does not change when its hot path is made faster (issue 11 item 8).

Golden outputs, written by the code before the optimisation (git 3f33dab) and compared line for
line: a synthetic Bulk Data export split by type (``bench.bulk_memory.write_export``, the
benchmark's own writer: 400 patients, several files per type) and the fixtures folder (every
rule, near-misses, bad input). A rule or text change that alters them on purpose regenerates
them with ``.venv/bin/python -m tests.test_perf_replay_output`` (and says so in its commit).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.bulk_memory import write_export

from .bulk_helpers import NOW, run
from .conftest import FIXTURES, ROOT

GOLDEN = Path(__file__).resolve().parent / "golden"
SPLIT_GOLDEN = GOLDEN / "perf_replay_split_400.jsonl"
FIXTURES_GOLDEN = GOLDEN / "perf_replay_fixtures.jsonl"
PATIENTS, PER_FILE = 400, 2500  # 2-4 files per resource type


def split_output(tmp: Path, *jobs: str) -> str:
    """JSON lines of the synthetic export, its folder shown as EXPORT (tmp paths differ per run)."""
    folder = tmp / "export"
    folder.mkdir()
    write_export(folder, PATIENTS, PER_FILE)
    done = run("replay", folder, "--now", NOW, "--format", "json", *jobs)
    assert done.returncode == 0, done.stderr
    return done.stdout.replace(str(folder), "EXPORT")


def fixtures_output(*jobs: str) -> str:
    done = run("replay", FIXTURES.relative_to(ROOT), "--now", NOW, "--format", "json", *jobs)
    return done.stdout


@pytest.mark.parametrize("jobs", [(), ("--jobs", "2")], ids=["jobs1", "jobs2"])
def test_split_export_output_is_unchanged_line_for_line(tmp_path: Path, jobs: tuple[str, ...]) -> None:
    got = split_output(tmp_path, *jobs).splitlines()
    want = SPLIT_GOLDEN.read_text().splitlines()
    assert len(got) == PATIENTS
    assert sum('"alerts":[]' not in line for line in want) >= 40  # the golden holds alerts to compare
    for number, (a, b) in enumerate(zip(got, want, strict=True), start=1):
        assert a == b, f"line {number} differs"


def test_fixtures_output_is_unchanged_line_for_line() -> None:
    got = fixtures_output().splitlines()
    want = FIXTURES_GOLDEN.read_text().splitlines()
    assert len(want) > 50
    assert len(got) == len(want)
    for number, (a, b) in enumerate(zip(got, want, strict=True), start=1):
        assert a == b, f"line {number} differs"


def main() -> int:
    """Rewrite the golden files from the code as it is now."""
    import tempfile

    GOLDEN.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        SPLIT_GOLDEN.write_text(split_output(Path(tmp)))
    FIXTURES_GOLDEN.write_text(fixtures_output())
    print(f"wrote {SPLIT_GOLDEN} and {FIXTURES_GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
