"""Run ``redflags`` with stderr on a real pseudo-terminal, as a user at a terminal sees it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from .conftest import FIXTURES, ROOT

EXE = Path(sys.executable).with_name("redflags")
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
BAR = "\u2501"  # the bar's line character


def command(*args: str | Path) -> list[str]:
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-m", "redflags.cli"]
    return [*cmd, *map(str, args)]


def run_on_a_pty(args: list[str | Path], *, stdout_too: bool = False) -> tuple[int, bytes, bytes]:
    """The command with stderr (and stdout when ``stdout_too``) on a real pseudo-terminal, other
    output to a pipe: (status, piped stdout, what the terminal received)."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "160", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    env.pop("TERM_PROGRAM", None)
    proc = subprocess.Popen(
        command(*args),
        stdin=subprocess.DEVNULL,
        stdout=follower if stdout_too else subprocess.PIPE,
        stderr=follower,
        cwd=ROOT,
        env=env,
    )
    os.close(follower)
    screen: list[bytes] = []

    def drain() -> None:  # the pty must be read while the command runs, or it blocks writing
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the command closed the terminal
                return
            if not data:
                return
            screen.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        out = proc.communicate(timeout=300)[0] or b""
    finally:
        proc.kill()
        reader.join(timeout=30)
        os.close(leader)
    return proc.returncode, out, b"".join(screen)


THURSDAY = FIXTURES / "history" / "gbs-thursday-arms.json"  # recorded on Thursday 2025-03-13
MONDAY_NOON = "2025-03-10T12:00:00Z"


def run_on_a_terminal(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """The command with its stderr on a pseudo-terminal (stdout a pipe); (exit status, stderr).

    ``env``: variables set (value) or removed (``""``) for the command.
    """
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "redflags.cli"]
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if v}
    master, slave = pty.openpty()
    with subprocess.Popen(
        [*cmd, *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        stdin=subprocess.DEVNULL,
        env=environ,
    ) as process:
        os.close(slave)
        chunks: list[bytes] = []
        deadline = time.monotonic() + 120
        while select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        status = process.wait(timeout=120)
    return status, b"".join(chunks).decode().replace("\r\n", "\n")
