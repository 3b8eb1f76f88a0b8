"""Interrupt a running bulk replay at an observed stage and check it stopped cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.synthetic import generate
from fhir_adapters.times import parse_now
from redflags.replay.partition import temp_dirs

from .conftest import ROOT

NOW = "2025-03-10T12:00:00Z"
PATIENTS = 3000
EXE = Path(sys.executable).with_name("redflags")


def make_big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough patients that a replay is still running when a stage is observed (once a session)."""
    folder = tmp_path_factory.getbasetemp() / "interrupt-corpus"
    if not (folder / "done").exists():
        folder.mkdir(exist_ok=True)
        generate(folder, PATIENTS, parse_now(NOW), per_file=500)
        (folder / "done").touch()
    return folder


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of ``pid`` (pid -> its /proc start time, to tell a reused pid apart)."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                start = started(child)
                if start is not None and child not in found:
                    found[child] = start
                    todo.append(child)
    return found


def started(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def alive(processes: dict[int, str]) -> list[int]:
    """Those still running (a zombie has exited: only its parent has not reaped it)."""
    left = []
    for pid, start in processes.items():
        if started(pid) != start:
            continue
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state != "Z":
            left.append(pid)
    return left


@dataclass
class Interrupted:
    returncode: int
    stdout: str
    stderr: str
    children: dict[int, str]


def interrupt(
    inputs: Path,
    spill: Path,
    when: Callable[[subprocess.Popen[bytes], list[Path]], bool],
    sig: signal.Signals,
    *options: str,
    group: bool = False,
) -> Interrupted:
    """Replay ``inputs``; send ``sig`` as soon as ``when(process, its temp folders)`` holds
    (to the whole process group with ``group``, as a terminal's Ctrl-C does)."""
    command = [str(EXE), "replay", str(inputs), "--now", NOW, "--format", "json", "--tmp-dir", str(spill)]
    proc = subprocess.Popen(
        [*command, *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 300
        while not when(proc, temp_dirs(spill)):
            assert proc.poll() is None, "the replay ended before the stage was observed"
            assert time.monotonic() < deadline, "the stage was not reached"
            children |= descendants(proc.pid)
            time.sleep(0.005)  # polling a condition (there is no event to block on across processes)
        children |= descendants(proc.pid)
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Interrupted(proc.returncode, out.decode(), err.decode(), children)


def assert_stopped_cleanly(done: Interrupted, spill: Path) -> None:
    """Exit 0 only with every result line (the signal came after the work was done); otherwise
    stopped: 1 (Ctrl-C), 143 (SIGTERM) or, once finished, killed by the default SIGTERM. Never a
    folder left, never a process of the replay left alive, no traceback from a stopped run."""
    complete = len(done.stdout.splitlines()) == PATIENTS
    assert done.returncode != 0 or complete, done.stderr[-2000:]
    if not complete:
        assert done.returncode in (1, 128 + signal.SIGTERM), done.stderr[-2000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "evaluation failed" not in done.stderr  # the signal was not taken for a rule failure
    assert temp_dirs(spill) == []
    left: list[int] = []
    deadline = time.monotonic() + 30  # a SIGKILLed worker is reaped by its parent as it exits
    while (left := alive(done.children)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"processes of the replay still alive: {left}"


def spilling(_proc: subprocess.Popen[bytes], dirs: list[Path]) -> bool:
    return any(any(d.glob("part-*")) for d in dirs)


def workers_started(proc: subprocess.Popen[bytes], dirs: list[Path]) -> bool:
    """Worker processes exist (being spawned or importing) and none has finished a partition."""
    return len(descendants(proc.pid)) >= 2 and not any(any(d.glob("out-*")) for d in dirs)


def evaluating(_proc: subprocess.Popen[bytes], dirs: list[Path]) -> bool:
    """Workers have evaluated a partition and others remain."""
    return any(any(d.glob("out-*")) and any(d.glob("part-*")) for d in dirs)
