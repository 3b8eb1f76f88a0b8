"""The quickstart's warnings as a person sees them (issue 12, item 9c).

``replay fixtures --now 2025-03-10T12:00:00Z`` printed the engine's raw JSON
``future_records_ignored`` on the terminal without naming a file. On a terminal it is now a
readable line naming the input files; logs written to a file or a pipe stay structlog JSON.
"""

from __future__ import annotations

import io

import orjson
import structlog

from redflags import logs

from .cli_helpers import run
from .conftest import ROOT
from .pty_helpers import (
    MONDAY_NOON,
    THURSDAY,
    run_on_a_terminal,
)


def test_on_a_terminal_records_after_now_are_one_readable_line_naming_the_file() -> None:
    named = THURSDAY.relative_to(ROOT)
    status, stderr = run_on_a_terminal("replay", named, "--now", MONDAY_NOON, "--no-progress")
    assert status == 0, stderr
    told = [x for x in stderr.splitlines() if not x.startswith("replay summary: ")]  # the terminal's summary
    assert told == [f"{named}: 1 record dated after --now ignored"]
    assert "Patient/" not in stderr and "v03" not in stderr


def test_on_a_terminal_other_warnings_are_readable_lines_not_json() -> None:
    status, stderr = run_on_a_terminal(
        "--log-level", "info", "replay", THURSDAY, "--now", MONDAY_NOON, "--no-progress"
    )
    assert status == 0, stderr
    lines = stderr.splitlines()
    assert "info: replay_started (inputs=1, now=2025-03-10T12:00:00Z, strict=False)" in lines
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert not any("future_records_ignored" in line for line in lines)  # told once, with the file


def test_off_a_terminal_the_log_stays_json() -> None:
    done = run("replay", THURSDAY.relative_to(ROOT), "--now", MONDAY_NOON)
    assert done.returncode == 0
    (line,) = done.stderr.splitlines()
    event = orjson.loads(line)
    assert (event["event"], event["level"], event["count"]) == ("future_records_ignored", "warning", 1)
    assert event["replay_id"]


def test_configure_renders_json_or_one_readable_line() -> None:
    for console, expected in ((False, None), (True, "warning: thing_happened (count=2, kinds=a,b)")):
        stream = io.StringIO()
        logs.configure("info", stream, console=console, told=frozenset({"told_elsewhere"}))
        structlog.contextvars.bind_contextvars(replay_id="r1")
        structlog.get_logger("t").warning("thing_happened", count=2, kinds=["a", "b"])
        structlog.get_logger("t").warning("told_elsewhere", count=1)
        lines = stream.getvalue().splitlines()
        if expected is None:
            assert [orjson.loads(x)["event"] for x in lines] == ["thing_happened", "told_elsewhere"]
        else:
            assert lines == [expected]
        structlog.contextvars.clear_contextvars()
