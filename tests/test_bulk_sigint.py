"""Ctrl-C and SIGTERM during a replay, at any stage: the run stops (non-zero) or had truly finished
(exit 0 with every result line), no folder is left under --tmp-dir, no worker process stays alive.

The signal is sent when a stage is observed (a condition on the process and its temporary folder,
waited for with a deadline), never after a fixed sleep; what follows may race with the end of the
run, so each outcome is told apart by what the run printed, not assumed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from redflags.replay.partition import temp_dirs

from .conftest import ROOT
from .sigint_helpers import (
    NOW,
    assert_stopped_cleanly,
    evaluating,
    interrupt,
    make_big,
    spilling,
    workers_started,
)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_big(tmp_path_factory)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_spilling_stops_and_leaves_nothing(
    big: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    done = interrupt(big, tmp_path, spilling, sig)
    assert_stopped_cleanly(done, tmp_path)


def test_ctrl_c_to_the_group_while_workers_start_leaves_no_worker_and_no_traceback(
    big: Path, tmp_path: Path
) -> None:
    """A terminal's Ctrl-C reaches every process of the group: workers still importing (before
    their initializer ignores SIGINT) died with a KeyboardInterrupt traceback each."""
    done = interrupt(big, tmp_path, workers_started, signal.SIGINT, "--jobs", "2", group=True)
    assert len(done.children) >= 2
    assert_stopped_cleanly(done, tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_workers_evaluate_stops_them_and_leaves_nothing(
    big: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    done = interrupt(big, tmp_path, evaluating, sig, "--jobs", "2", group=sig == signal.SIGINT)
    assert_stopped_cleanly(done, tmp_path)


FINALIZER = """
import os, sys
from redflags.replay import partition
from redflags.cli import main

class Finalized:  # the signal is handled while its __del__ runs: Python prints and drops the exception
    def __del__(self):
        os.kill(os.getpid(), {sig})

original, calls = partition.partition_of, [0]

def partition_of(pid, k):
    calls[0] += 1
    if calls[0] == 100:
        Finalized()
    return original(pid, k)

partition.partition_of = partition_of
main(sys.argv[1:], prog_name="redflags")
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_handled_inside_a_finalizer_still_stops_the_replay(
    big: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    """Before: "Exception ignored in ... __del__", the replay went on and exited 0 with every line."""
    script = FINALIZER.format(sig=int(sig))
    args = ["replay", str(big), "--now", NOW, "--format", "json", "--tmp-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == (1 if sig == signal.SIGINT else 128 + sig), done.stderr[-2000:]
    assert done.stdout == ""  # stopped before the first result line
    assert temp_dirs(tmp_path) == []


AROUND = """
import os, sys, shutil, tempfile
from redflags.cli import main

real = {module}.{name}

def signalled(*args, **kwargs):  # the signal arrives just {when} the call
    if "{when}" == "before":
        os.kill(os.getpid(), {sig})
    done = real(*args, **kwargs)
    if "{when}" == "after":
        os.kill(os.getpid(), {sig})
    return done

{module}.{name} = signalled
main(sys.argv[1:], prog_name="redflags")
"""


@pytest.mark.parametrize(
    ("module", "name", "when", "sig"),
    [
        ("tempfile", "mkdtemp", "after", signal.SIGTERM),
        ("tempfile", "mkdtemp", "after", signal.SIGINT),
        ("shutil", "rmtree", "before", signal.SIGINT),
        ("shutil", "rmtree", "before", signal.SIGTERM),
    ],
    ids=["SIGTERM-after-mkdtemp", "SIGINT-after-mkdtemp", "SIGINT-during-removal", "SIGTERM-during-removal"],
)
def test_a_signal_while_the_folder_is_created_or_removed_leaves_nothing(
    tmp_path: Path, module: str, name: str, when: str, sig: signal.Signals
) -> None:
    """Before: SIGTERM between mkdtemp and installing the handler killed the process (default
    disposition) with the folder left; a (second) Ctrl-C during the removal cut it short."""
    inputs = ROOT / "fixtures" / "vignettes"
    script = AROUND.format(module=module, name=name, when=when, sig=int(sig))
    args = ["replay", str(inputs), "--now", NOW, "--format", "json", "--tmp-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == (1 if sig == signal.SIGINT else 128 + sig), done.stderr[-2000:]
    assert temp_dirs(tmp_path) == []


OTHER_THREAD = """
import os, shutil, signal, sys, threading, time
from pathlib import Path
from redflags.replay import partition
from redflags.cli import main

spill = Path(sys.argv[sys.argv.index("--tmp-dir") + 1])
real = shutil.rmtree

def rmtree(path, *args, **kwargs):  # what was evaluated when the replay stopped
    outs, files = len(list(Path(path).glob("out-*"))), len(list(Path(path).glob("*")))
    print("evaluated", outs, "of", files, file=sys.stderr)
    return real(path, *args, **kwargs)

partition.shutil.rmtree = rmtree

def interrupt():  # the kernel may deliver a process's SIGINT to any thread: here, this one
    while not any(spill.glob("*/out-*")):
        time.sleep(0.005)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

threading.Thread(target=interrupt, daemon=True).start()
main(sys.argv[1:], prog_name="redflags")
"""


def test_ctrl_c_delivered_to_another_thread_stops_the_workers_without_waiting_for_them(
    big: Path, tmp_path: Path
) -> None:
    """Before: the parent waited for every partition without a timeout, so a SIGINT the kernel gave
    another thread was only acted on once all partitions were evaluated (Ctrl-C did not stop them)."""
    args = ["replay", str(big), "--now", NOW, "--format", "json", "--jobs", "2", "--tmp-dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-c", OTHER_THREAD, *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stdout == ""
    evaluated = [line.split() for line in done.stderr.splitlines() if line.startswith("evaluated ")]
    assert len(evaluated) == 1, done.stderr[-2000:]
    _word, out, _of, files = evaluated[0]
    assert int(out) < int(files), "every partition was evaluated after the Ctrl-C"
    assert temp_dirs(tmp_path) == []
