"""``scripts/fhir-test-server``: the one documented command that installs and starts the
write-back FHIR test server (issue 12, item 1).

The script runs on a temporary copy of its part of the repository (the script and
``tests/fhir_server/`` without ``node_modules``), so the test proves it installs what is
missing; npm reads the packages from its cache, filled by the harness's own install.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .fhir_server_harness import SERVER_DIR, FhirServerUnavailable, _read_ready_line, ensure_installed

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "fhir-test-server"


@pytest.fixture
def copy(tmp_path: Path) -> Iterator[Path]:
    """The script and the server's sources (no node_modules) in a fresh tree."""
    try:
        ensure_installed()  # fills npm's cache, so the copy installs without the network
    except FhirServerUnavailable as exc:
        pytest.skip(str(exc))
    (tmp_path / "scripts").mkdir()
    shutil.copy2(SCRIPT, tmp_path / "scripts" / SCRIPT.name)
    server = tmp_path / "tests" / "fhir_server"
    server.mkdir(parents=True)
    for name in ("package.json", "package-lock.json", "server.mjs"):
        shutil.copy2(SERVER_DIR / name, server / name)
    yield tmp_path


def _start(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(root / "scripts" / SCRIPT.name), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop_with_ctrl_c(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_the_script_installs_starts_prints_its_url_and_stops_on_ctrl_c(copy: Path) -> None:
    process = _start(copy, "0")
    try:
        url = _read_ready_line(process, timeout=120)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/fhir/R4")
        assert (copy / "tests" / "fhir_server" / "node_modules" / "@medplum" / "core").is_dir()
        metadata = requests.get(f"{url}/metadata", timeout=10)
        assert metadata.status_code == 200
        assert metadata.json()["resourceType"] == "CapabilityStatement"
        created = requests.post(
            f"{url}/Patient",
            json={"resourceType": "Patient", "id": "op-script-1"},
            headers={"Content-Type": "application/fhir+json"},
            timeout=10,
        )
        assert created.status_code == 201
    finally:
        code = _stop_with_ctrl_c(process)
    assert process.poll() is not None
    assert code in (0, 130, -signal.SIGINT)


def test_a_second_start_reuses_the_install(copy: Path) -> None:
    first = _start(copy, "0")
    try:
        _read_ready_line(first, timeout=120)
    finally:
        _stop_with_ctrl_c(first)
    marker = copy / "tests" / "fhir_server" / "node_modules" / ".package-lock.json"
    installed = marker.stat().st_mtime_ns
    second = _start(copy, "0")
    try:
        _read_ready_line(second, timeout=60)
    finally:
        _stop_with_ctrl_c(second)
    assert marker.stat().st_mtime_ns == installed  # no second npm ci


def test_a_port_that_is_not_a_number_is_one_line_and_exit_2(copy: Path) -> None:
    done = subprocess.run(
        [str(copy / "scripts" / SCRIPT.name), "eighty"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "fhir-test-server: PORT must be a number (0: any free port), not 'eighty'"
    ]
    assert not (copy / "tests" / "fhir_server" / "node_modules").exists()


def test_a_port_already_in_use_is_one_line_and_exit_1() -> None:
    try:
        ensure_installed()
    except FhirServerUnavailable as exc:
        pytest.skip(str(exc))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([str(SCRIPT), str(port)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""  # no ready line
    assert done.stderr.strip().splitlines() == [f"fhir-test-server: port {port} is in use"]
