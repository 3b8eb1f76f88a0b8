"""The README's commands, run as a newcomer runs them, on a fresh copy of the repository.

Blocks marked ``<!-- readme-walk: NAME -->`` are taken verbatim from README.md and run with
bash in a copy holding only the tracked files (a fresh clone): the two set-up commands, the
write-back session against the FHIR test server and the curl session against
``examples/service/``. Only the ports are changed (to free ones), so the README cannot drift
from the program again (issue 12). The bootstrap runs once for the module, with a pyenv shim
first on PATH, and must stay quiet (issue 12, item 9g).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from rulesets import RULES

from .conftest import ROOT
from .repo_copy import fresh_copy

WALK = re.compile(r"<!-- readme-walk: (?P<name>[\w-]+) -->\n```sh\n(?P<body>.*?)\n```", re.S)

#: What a pyenv shim prints for a version that is installed but not selected (exit 127).
PYENV_SHIM = """#!/bin/sh
echo "pyenv: $(basename "$0"): command not found" >&2
echo "" >&2
echo "The \\`$(basename "$0")' command exists in these Python versions:" >&2
exit 127
"""

#: What the bootstrap must never print.
NOISE = ("command not found", "pyenv:", "project.license", "SPDX", "License classifiers", "Traceback")


def blocks() -> dict[str, str]:
    found = {m["name"]: m["body"] for m in WALK.finditer((ROOT / "README.md").read_text())}
    assert {"setup", "tests", "write-back", "service"} <= found.keys(), sorted(found)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Done = subprocess.CompletedProcess[str]
Walked = tuple[Path, dict[str, str], Done]


def run_block(script: str, repo: Path, env: dict[str, str], timeout: float) -> Done:
    """bash runs the block in its own process group; whatever it left running is killed after."""
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return Done(process.args, process.returncode, out, err)


@pytest.fixture(scope="module")
def walk_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    if shutil.which("curl") is None:
        pytest.skip("the README's sessions use curl, which is not installed here")
    base = tmp_path_factory.mktemp("readme-walk")
    shims = base / "shims"
    shims.mkdir()
    shim = shims / "python3.12"
    shim.write_text(PYENV_SHIM)
    shim.chmod(0o755)
    python_dir = str(Path(sys.executable).resolve().parent)  # a 3.11/3.12 the bootstrap can take
    env = {**os.environ, "PATH": os.pathsep.join([str(shims), python_dir, os.environ.get("PATH", "")])}
    for name in ("VIRTUAL_ENV", "REDFLAGS_STATE", "REDFLAGS_CONFIG", "PYTEST_ADDOPTS", "REDFLAGS_LOG_FORMAT"):
        env.pop(name, None)
    yield fresh_copy(base / "repo"), env


@pytest.fixture(scope="module")
def set_up(walk_env: tuple[Path, dict[str, str]]) -> Walked:
    repo, env = walk_env
    done = run_block(blocks()["setup"], repo, env, timeout=1200)
    return repo, env, done


def test_the_first_command_installs_quietly_and_replays_every_fixture(set_up: Walked) -> None:
    repo, _env, done = set_up
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in NOISE:
        assert noise not in done.stderr, done.stderr[-3000:]
    for rule in RULES:
        assert rule in done.stdout, f"{rule} raised by no fixture:\n{done.stdout[-2000:]}"
    licence = "import importlib.metadata as m; print(m.metadata('redflags').get_all('License-File'))"
    listed = subprocess.run(
        [str(repo / ".venv" / "bin" / "python"), "-c", licence], capture_output=True, text=True, timeout=60
    )
    assert listed.stdout.strip() == "['LICENSE']", listed.stdout + listed.stderr  # the licence ships


def test_the_test_command_is_the_one_ci_runs_and_runs(set_up: Walked) -> None:
    repo, env, _ = set_up
    command = blocks()["tests"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci, "README's test command differs from .ci/run's"
    # the same command, narrowed to two quick test files (the whole suite is this suite)
    narrowed = {**env, "PYTEST_ADDOPTS": "-q -p no:cacheprovider tests/test_newcomer_fixtures.py"}
    done = run_block(command, repo, narrowed, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"\d+ passed", done.stdout), done.stdout[-2000:]
    assert "All checks passed" in done.stdout + done.stderr  # ruff ran after pytest


def test_the_write_back_session_delivers_a_flag(set_up: Walked) -> None:
    repo, env, _ = set_up
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("the FHIR test server needs node and npm, which are not installed here")
    script = blocks()["write-back"].replace("8090", str(free_port()))
    done = run_block(script, repo, env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FHIR test server ready at http://127.0.0.1:" in done.stdout + done.stderr
    assert re.search(r"delivered\s+[1-9]", done.stdout), done.stdout[-2000:]
    assert re.search(r"pending\s+0", done.stdout) and re.search(r"failed\s+0", done.stdout), done.stdout
    last = next(line for line in reversed(done.stdout.splitlines()) if '"resourceType"' in line)
    flags = orjson.loads(last[last.index("{") :])  # the server's own count of Flags
    assert flags["resourceType"] == "Bundle" and flags["total"] >= 1, last


def test_the_curl_session_gets_a_card_a_flag_and_a_401(set_up: Walked) -> None:
    repo, env, _ = set_up
    script = blocks()["service"].replace("8080", str(free_port()))
    done = run_block(script, repo, env, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert '"id":"redflags-patient-view"' in out.replace(" ", "")  # discovery
    assert "Cauda equina syndrome" in out and '"indicator":"critical"' in out.replace(" ", "")  # the card
    assert out.count('"resourceType":"Flag"') >= 2, out[-3000:]  # $evaluate, static token and JWT
    assert "Guillain" in out
    assert re.search(r"HTTP/1\.1 401 ", out), out[-2000:]
    assert re.search(r"^www-authenticate: Bearer", out, re.M | re.I), out[-2000:]
    assert '"code":"login"' in out.replace(" ", "")
