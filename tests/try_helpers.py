"""The service examples' client key, token minting and date, shared by the try-it tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from .service_harness import ROOT, Service, running_service

EXAMPLES = ROOT / "examples" / "service"
KEY = EXAMPLES / "demo-client-key.pem"
ISS = "https://demo-ehr.example.org"
NOW = "2025-03-10T12:00:00Z"  # the fixture data's date
PATIENT_VIEW = "redflags-patient-view"


def redflags(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def mint(aud: str, *more: str) -> str:
    done = redflags("token", "--key", str(KEY), "--iss", ISS, "--aud", aud, *more)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def static_token() -> str:
    (line,) = [s for s in (EXAMPLES / "tokens.txt").read_text().splitlines() if s and not s.startswith("#")]
    return line.split()[1]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`redflags serve` with the example clients file and static tokens, at the data's date."""
    tmp = tmp_path_factory.mktemp("examples")
    args = ("--clients", str(EXAMPLES / "clients.json"), "--tokens", str(EXAMPLES / "tokens.txt"))
    args += ("--now", NOW)
    with running_service(tmp, *args) as svc:
        yield svc
