"""``--log-format json|console|auto`` (env ``REDFLAGS_LOG_FORMAT``) for every command.

Since logs became readable lines on a terminal, an operator running ``serve`` in a console
that feeds a log collector lost the JSON. ``auto`` (the default) keeps that choice by
terminal; ``json`` and ``console`` fix it, for the command and the processes it starts.
"""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import requests

from redflags import logs

from .cli_helpers import run
from .conftest import FIXTURES, ROOT
from .pty_helpers import MONDAY_NOON, THURSDAY, run_on_a_terminal
from .service_harness import free_port

V01 = FIXTURES / "vignettes" / "V01-ces-positive.json"
V01_NOW = "2025-03-10T12:00:00Z"


def json_lines(text: str) -> list[dict]:
    """Every non-empty line as JSON (fails the test on a line that is not)."""
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_log_format_json_keeps_json_on_a_terminal() -> None:
    status, stderr = run_on_a_terminal(
        "--log-format", "json", "--log-level", "info", "replay", V01, "--now", V01_NOW, "--no-progress"
    )
    assert status == 0, stderr
    events = json_lines(stderr)
    assert {"replay_started", "alert"} <= {e["event"] for e in events}
    assert all(e["replay_id"] and e["timestamp"] for e in events)


def test_the_environment_variable_chooses_json_on_a_terminal() -> None:
    status, stderr = run_on_a_terminal(
        "--log-level", "info", "replay", V01, "--now", V01_NOW, "--no-progress", env={logs.FORMAT_ENV: "json"}
    )
    assert status == 0, stderr
    assert "alert" in {e["event"] for e in json_lines(stderr)}


def test_json_on_a_terminal_keeps_the_engine_event_instead_of_the_readable_line() -> None:
    status, stderr = run_on_a_terminal(
        "--log-format", "json", "replay", THURSDAY, "--now", MONDAY_NOON, "--no-progress"
    )
    assert status == 0, stderr
    (event,) = json_lines(stderr)  # no "FILE: 1 record dated after --now ignored" mixed in
    assert (event["event"], event["count"]) == ("future_records_ignored", 1)


def test_log_format_console_gives_readable_lines_off_a_terminal() -> None:
    done = run("--log-format", "console", "--log-level", "info", "replay", V01, "--now", V01_NOW)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines and not any(line.lstrip().startswith("{") for line in lines)
    assert any(line.startswith("info: replay_started (") for line in lines)


def test_auto_is_the_default_and_an_unknown_format_is_refused() -> None:
    status, stderr = run_on_a_terminal(
        "--log-format", "auto", "--log-level", "info", "replay", V01, "--now", V01_NOW, "--no-progress"
    )
    assert status == 0 and "info: replay_started (" in stderr, stderr
    done = run("--log-format", "xml", "replay", V01, "--now", V01_NOW)
    assert done.returncode == 2 and "--log-format" in done.stderr
    assert "REDFLAGS_LOG_FORMAT" in run("--help").stdout


@pytest.mark.parametrize("value", ["json", "console", "auto"])
def test_choose_format_sets_the_environment_the_children_inherit(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(logs.FORMAT_ENV, "auto")  # recorded, so the test's choice is undone after it
    logs.choose_format(value)
    assert os.environ.get(logs.FORMAT_ENV, "auto") == value
    with pytest.raises(ValueError, match="json"):
        logs.choose_format("xml")


@contextlib.contextmanager
def serve_on_a_terminal(tmp: Path, *options: str) -> list[bytes]:
    """``redflags OPTIONS serve`` with stderr on a pseudo-terminal until /healthz answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "redflags.cli", *options, "serve", "--port", str(port)]
    cmd += ["--allow-unauthenticated", "--state", str(tmp / "state.sqlite")]
    cmd += ["--feedback-db", str(tmp / "feedback.sqlite")]
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        with contextlib.suppress(OSError):  # EIO: every writer closed its end
            while chunk := os.read(master, 65536):
                chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    process = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL
    )
    os.close(slave)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not _healthy(port):
            assert process.poll() is None, b"".join(chunks).decode()
            assert time.monotonic() < deadline, b"".join(chunks).decode()
            time.sleep(0.1)
        yield chunks
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=15)
        os.close(master)


def _healthy(port: int) -> bool:
    with contextlib.suppress(requests.ConnectionError):
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    return False


def test_serve_on_a_terminal_logs_json_when_asked(tmp_path: Path) -> None:
    with serve_on_a_terminal(tmp_path, "--log-format", "json", "--log-level", "info") as chunks:
        pass
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    events = json_lines(text)  # the HTTP process and its engine processes alike
    assert events and all(e.get("event") and e.get("timestamp") for e in events), text


def test_replay_jobs_workers_log_json_on_a_terminal_too() -> None:
    status, stderr = run_on_a_terminal(
        "--log-format", "json", "replay", THURSDAY, V01, "--now", MONDAY_NOON, "--jobs", "2", "--no-progress"
    )
    assert status == 0, stderr
    events = json_lines(stderr)  # the spawned workers took the parent's choice
    assert "future_records_ignored" in {e["event"] for e in events}
