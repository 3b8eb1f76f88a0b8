"""Issue 12, item 3: a wrong ``--state`` (or ``--db``) path is an error, never a new empty store.

Commands that read or change a store refuse one that does not exist (one line, exit 2) and
create no file or folder; only ``replay`` (and ``serve``) create one, and say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .operator_helpers import (
    run,
)
from .writeback_helpers import NOW, positives

#: Every command that reads or changes an existing store, with the arguments it needs besides --state.
STORE_COMMANDS: dict[str, tuple[str, ...]] = {
    "outbox status": ("outbox", "status"),
    "outbox list": ("outbox", "list"),
    "outbox list --failed": ("outbox", "list", "--failed"),
    "outbox retry": ("outbox", "retry", "1"),
    "outbox retry --all-failed": ("outbox", "retry", "--all-failed"),
    "outbox flush": ("outbox", "flush", "--fhir-server", "http://127.0.0.1:9/fhir"),
    "history forget": ("history", "forget", "Patient/x"),
    "history tenants": ("history", "tenants"),
}


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", list(STORE_COMMANDS))
@pytest.mark.parametrize("path", ["typo.sqlite", "missing/folder/state.sqlite"])
def test_a_command_given_a_store_that_does_not_exist_refuses_and_creates_nothing(
    name: str, path: str, tmp_path: Path
) -> None:
    done = run(tmp_path, *STORE_COMMANDS[name], "--state", path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == [f"Error: no state store at {path} (replay and serve create one)"]
    assert done.stdout == ""
    assert tree(tmp_path) == []


def test_the_state_path_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    done = run(tmp_path, "outbox", "status", env={"REDFLAGS_STATE": "typo.sqlite"})
    assert done.returncode == 2
    assert "no state store at typo.sqlite" in done.stderr
    assert tree(tmp_path) == []


def test_feedback_report_refuses_a_database_that_does_not_exist(tmp_path: Path) -> None:
    done = run(tmp_path, "feedback", "report", "--db", "nope/feedback.sqlite")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "Error: no feedback database at nope/feedback.sqlite (serve creates one)"
    ]
    assert tree(tmp_path) == []


def test_replay_creates_the_store_says_so_once_and_the_commands_then_read_it(tmp_path: Path) -> None:
    positives(tmp_path / "in", "paths")
    first = run(tmp_path, "replay", "in", "--now", NOW, "--state", "new/state.sqlite")
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines().count("created state store at new/state.sqlite") == 1
    assert (tmp_path / "new" / "state.sqlite").is_file()
    again = run(tmp_path, "replay", "in", "--now", NOW, "--state", "new/state.sqlite")
    assert again.returncode == 0, again.stderr
    assert "created state store" not in again.stderr
    status = run(tmp_path, "outbox", "status", "--state", "new/state.sqlite")
    assert (status.returncode, status.stdout.split()) == (
        0,
        ["pending", "1", "failed", "0", "delivered", "0"],
    )
    forget = run(tmp_path, "history", "forget", "Patient/nobody", "--state", "new/state.sqlite")
    assert forget.returncode == 0 and "0 records removed" in forget.stdout
