"""``redflags replay --jobs N``: partitions evaluated in N spawned processes, output identical to one."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.synthetic import generate
from fhir_adapters.times import parse_now
from redflags.replay.partition import WorkerError, replay_all, temp_dirs

from .bulk_helpers import NOW, run, split_by_type
from .conftest import FIXTURES, ROOT
from .sigint_helpers import assert_stopped_cleanly, evaluating, interrupt, make_big

JOBS2 = ("--jobs", "2", "--tmp-dir")


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 synthetic patients split by type over 3 files per type (half gzip), as an export."""
    single = tmp_path_factory.mktemp("single")
    generate(single, 300, parse_now(NOW), per_file=300)
    folder = tmp_path_factory.mktemp("export")
    split_by_type(sorted(single.glob("*.json")), folder)
    return folder


def outputs(path: Path, fmt: str, *jobs: str) -> list[subprocess.CompletedProcess[str]]:
    return [run("replay", path, "--now", NOW, "--format", fmt, "--jobs", j) for j in jobs]


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_jobs_2_prints_exactly_what_jobs_1_prints_on_a_split_export(export: Path, fmt: str) -> None:
    one, two = outputs(export, fmt, "1", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert len(one.stdout.splitlines()) >= 300
    assert two.stdout == one.stdout


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_jobs_2_and_0_print_exactly_what_jobs_1_prints_on_the_fixtures(fmt: str) -> None:
    one, two, per_core = outputs(FIXTURES, fmt, "1", "2", "0")
    assert one.stdout.strip()
    assert (two.returncode, two.stdout) == (one.returncode, one.stdout)
    assert (per_core.returncode, per_core.stdout) == (one.returncode, one.stdout)
    # stderr carries the same messages (logs aside); their order may differ between processes
    assert messages(two.stderr) == messages(one.stderr)
    assert messages(per_core.stderr) == messages(one.stderr)


def messages(stderr: str) -> list[str]:
    return sorted(line for line in stderr.splitlines() if not line.startswith("{"))


def test_jobs_above_1_with_state_is_one_usage_line(tmp_path: Path) -> None:
    done = run("replay", FIXTURES / "vignettes", "--now", NOW, "--jobs", "2", "--state", tmp_path / "s.db")
    assert done.returncode == 2
    assert "--jobs above 1 cannot be used with --state" in done.stderr
    assert done.stdout == "" and not (tmp_path / "s.db").exists()


def test_jobs_1_with_state_still_runs(tmp_path: Path) -> None:
    done = run("replay", FIXTURES / "vignettes", "--now", NOW, "--jobs", "1", "--state", tmp_path / "s.db")
    assert done.returncode in (0, 1), done.stderr
    assert "--jobs" not in done.stderr


def _failing_setup() -> tuple[object, object, object]:
    """A worker whose engine cannot be built (runs in the spawned process)."""
    raise RuntimeError("engine could not be built")


def test_a_failing_worker_is_an_error_and_leaves_no_temporary_files(export: Path, tmp_path: Path) -> None:
    lines = replay_all(
        [export],
        None,  # type: ignore[arg-type]  # the parent does not evaluate with jobs=2
        parse_now(NOW),
        lambda done: b"",
        lambda line: None,
        tmp_dir=tmp_path,
        jobs=2,
        setup=_failing_setup,
    )
    with pytest.raises(WorkerError, match="engine could not be built"):
        list(lines)
    assert temp_dirs(tmp_path) == []


def test_a_failing_worker_from_the_command_line_is_one_line_and_exit_1(export: Path, tmp_path: Path) -> None:
    script = (
        "import sys; from redflags import cli; from redflags.cli import replay;"
        "from tests.test_bulk_jobs import _failing_setup;"
        "replay.partial = lambda *a: _failing_setup;"
        "sys.argv = ['redflags', *sys.argv[1:]]; cli.main()"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "replay",
            str(export),
            "--now",
            NOW,
            "--format",
            "json",
            *JOBS2,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("replay: ")]
    assert errors == ["replay: a worker process failed: engine could not be built"], done.stderr
    assert done.stdout == "" and temp_dirs(tmp_path) == []


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_big(tmp_path_factory)


def test_ctrl_c_stops_the_workers_and_removes_the_temporary_files(big: Path, tmp_path: Path) -> None:
    """Ctrl-C to the process group (as a terminal sends it) once a worker finished a partition and
    others remain: stopped, or truly finished (0 with every line); no folder, no worker left."""
    done = interrupt(big, tmp_path, evaluating, signal.SIGINT, "--jobs", "2", group=True)
    assert_stopped_cleanly(done, tmp_path)


def test_jobs_is_ignored_with_expect() -> None:
    """--expect compares each file on its own in one process: --jobs does not change its report."""
    one, two = (
        run("replay", FIXTURES / "vignettes", "--expect", "--format", "json", "--jobs", j) for j in ("1", "2")
    )
    assert one.stdout.strip()
    assert (two.returncode, two.stdout) == (one.returncode, one.stdout)
