"""``redflags serve`` says where it listens, and a port already in use is one line and exit 1
before anything starts (no "ready" line, no engine process, no database created)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from .service_harness import ROOT, running_service


def test_serve_logs_the_url_it_listens_on_once_it_accepts_calls(tmp_path: Path) -> None:
    with running_service(tmp_path, "--allow-unauthenticated") as service:
        lines = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    (listening,) = [line for line in lines if line["event"] == "listening"]
    assert listening["url"] == service.url and listening["level"] == "info"
    assert events.index("service_ready") < events.index("listening")


def test_a_port_in_use_is_one_line_and_exit_1_with_nothing_started(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "redflags.cli", "--log-level", "info", "serve", "--port", str(port),
               "--allow-unauthenticated", "--state", str(tmp_path / "state.sqlite"),
               "--feedback-db", str(tmp_path / "feedback.sqlite")]  # fmt: skip
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line == (
        f"Error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(another process listens there): stop it or choose --port"
    )
    assert done.stdout == "" and not list(tmp_path.iterdir())  # no store, no feedback database


def test_a_host_that_is_not_this_machines_is_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "redflags.cli", "serve", "--host", "192.0.2.1", "--port", "0",
           "--allow-unauthenticated", "--state", str(tmp_path / "s.sqlite")]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "cannot listen on 192.0.2.1:0: address not available" in done.stderr
