"""Every command that takes ``--state`` works with a ``postgresql://`` URL (tests/pg_server.py),
writes no local file, and says what is wrong with an unreachable database in one line, without
the password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from redflags.state.model import ShownCard
from redflags.state.stores import open_feedback, open_state

from .conftest import FIXTURES, ROOT
from .test_pg_concurrency import socket_closed_port
from .writeback_helpers import alerts_of

HISTORY = FIXTURES / "history"
MONDAY, WEDNESDAY = HISTORY / "gbs-monday.json", HISTORY / "gbs-wednesday.json"
PID, GBS = "Patient/v03", "guillain_barre_syndrome"


WORK: list[Path] = []  # the test's working directory (the ``work`` fixture)


def redflags(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI run in the test's own empty working directory (the repository is on PYTHONPATH)."""
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", *args],
        cwd=WORK[-1],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and state directory: nothing may appear in either."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg").mkdir()
    WORK.append(tmp_path)
    return tmp_path


def replay(url: str, path: Path, now: str, *more: str) -> dict:
    run = redflags("replay", str(path), "--now", now, "--format", "json", "--state", url, *more)
    assert run.returncode == 0, run.stderr
    return alerts_of(run)


def test_replay_history_and_outbox_on_a_database_url(pg_url: str, work: Path) -> None:
    replay(pg_url, MONDAY, "2025-03-10T12:00:00Z")
    assert replay(pg_url, WEDNESDAY, "2025-03-12T12:00:00Z") == {PID: [(GBS, "critical")]}
    replay(pg_url, MONDAY, "2025-03-10T12:00:00Z", "--tenant", "site-b")

    tenants = redflags("history", "tenants", "--state", pg_url)
    assert tenants.stdout.splitlines() == ["default\t1 patients", "site-b\t1 patients"], tenants.stderr
    status = redflags("outbox", "status", "--state", pg_url, "--tenant", "default")
    assert status.stdout.splitlines() == ["pending 1", "failed 0", "delivered 0"], status.stderr
    listed = redflags("outbox", "list", "--state", pg_url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [item["rule"] for item in json.loads(listed.stdout)] == [GBS]
    forgot = redflags("history", "forget", PID, "--state", pg_url, "--tenant", "site-b")
    assert forgot.returncode == 0 and "0 records" not in forgot.stdout, forgot.stderr
    with open_state(pg_url) as store:
        assert store.tenants() == {"default": 1}
        assert [t.change for t in store.transitions(PID)] == ["raised"]
    assert files_in(work) == ["xdg"]  # no local file


def test_feedback_report_reads_every_replicas_cards_from_the_database(pg_url: str, work: Path) -> None:
    for replica in ("one", "two"):  # two replicas, each its own connection pool
        store = open_feedback(pg_url)
        store.record_cards("redflags", [ShownCard(f"card-{replica}", GBS, "A", "critical")], 1_800_000_000)
        store.close()
    for args in (("--state", pg_url), ("--db", pg_url)):
        done = redflags("feedback", "report", *args, "--format", "json")
        assert done.returncode == 0, done.stderr
        (rule,) = json.loads(done.stdout)["rules"]
        assert rule["rule"] == GBS and rule["shown"] == 2 and rule["no_feedback"] == 2
    env_only = redflags("feedback", "report", "--format", "json", env={"REDFLAGS_STATE": pg_url})
    assert env_only.returncode == 0 and json.loads(env_only.stdout)["rules"][0]["shown"] == 2
    assert files_in(work) == ["xdg"]


@pytest.mark.parametrize(
    "args",
    [
        ("outbox", "status", "--state"),
        ("history", "tenants", "--state"),
        ("feedback", "report", "--state"),
        ("replay", str(MONDAY), "--state"),
    ],
)
def test_an_unreachable_database_is_one_line_naming_host_and_database(
    args: tuple[str, ...], work: Path
) -> None:
    with socket_closed_port() as port:
        done = redflags(*args, f"postgresql://rf:s3cret@127.0.0.1:{port}/site")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert f"127.0.0.1:{port}/site" in lines[0] and "s3cret" not in done.stderr + done.stdout
    assert files_in(work) == ["xdg"]


def test_serve_with_a_database_url_and_a_feedback_file_is_refused(work: Path) -> None:
    done = redflags(
        "serve",
        "--allow-unauthenticated",
        "--port",
        "1",
        "--state",
        "postgresql://rf:s3cret@127.0.0.1:1/site",
        "--feedback-db",
        str(work / "f.sqlite"),
    )
    assert done.returncode == 2 and "s3cret" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "every store lives in that database" in done.stderr
    assert files_in(work) == ["xdg"]


def test_no_password_reaches_the_output_or_the_logs(pg_server, work: Path) -> None:
    """A URL with a password reaches the database (trust auth ignores it) and never the output."""
    url = pg_server.fresh_url().replace("postgres@", "postgres:s3cret@")
    replay(url, MONDAY, "2025-03-10T12:00:00Z")
    done = redflags("--log-level", "debug", "outbox", "status", "--state", url)
    assert done.returncode == 0 and "s3cret" not in done.stdout + done.stderr
    assert os.listdir(work) == ["xdg"]
