"""Issue 10, item 14 (token part): the write-back token stays out of ``ps`` and out of the engines.

``--fhir-token-file`` (and ``$REDFLAGS_FHIR_TOKEN``) keep the token off the command line; however
it was given, the engine processes of ``redflags serve`` never see it (their environment, read
from ``/proc/<pid>/environ``), and only the HTTP process's delivery worker sends it. A FHIR
server stub on 127.0.0.1 accepts transactions only with the right bearer token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from .cds_helpers import PATIENT_VIEW, vignette_request
from .conftest import FIXTURES
from .service_harness import ROOT, running_service

TOKEN = "wb-" + "t0k3n" * 8
NOW = "2025-03-10T12:00:00Z"
V01 = FIXTURES / "vignettes" / "V01-ces-positive.json"
DEADLINE_S = 60.0


class FhirStub:
    """Answers a transaction with 200 when it carries ``Bearer TOKEN``, else 401; records each."""

    def __init__(self) -> None:
        self.authorizations: list[str | None] = []
        self.accepted = threading.Event()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                bundle = json.loads(self.rfile.read(length) or b"{}")
                auth = self.headers.get("Authorization")
                stub.authorizations.append(auth)
                if auth != f"Bearer {TOKEN}":
                    self._answer(401, {"resourceType": "OperationOutcome", "issue": [{"code": "login"}]})
                    return
                entries = [{"response": {"status": "201 Created"}} for _ in bundle.get("entry") or ()]
                self._answer(
                    200, {"resourceType": "Bundle", "type": "transaction-response", "entry": entries}
                )
                stub.accepted.set()

            def _answer(self, status: int, doc: dict[str, Any]) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/fhir"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub() -> Iterator[FhirStub]:
    server = FhirStub()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()


def token_file(tmp_path: Path, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "fhir-token"
    path.write_text(text)
    path.chmod(0o600)
    return path


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def engine_processes(pid: int) -> list[int]:
    entry = b"redflags.workers.process"  # python -m: an engine process
    return [c for c in children(pid) if entry in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.parametrize("given", ["file", "environment", "command line"])
def test_engine_processes_never_see_the_write_back_token(tmp_path: Path, stub: FhirStub, given: str) -> None:
    args = ["--allow-unauthenticated", "--now", NOW, "--workers", "2", "--fhir-server", stub.url]
    env = {k: v for k, v in os.environ.items() if k != "REDFLAGS_FHIR_TOKEN"}
    if given == "file":
        args += ["--fhir-token-file", str(token_file(tmp_path))]
    elif given == "environment":
        env["REDFLAGS_FHIR_TOKEN"] = TOKEN
    else:
        args += ["--fhir-token", TOKEN]
    with running_service(tmp_path, *args, env=env) as service:
        engines = engine_processes(service.process.pid)
        assert len(engines) == 2
        for pid in engines:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert TOKEN.encode() not in environ
            assert b"REDFLAGS_FHIR_TOKEN" not in environ
            assert TOKEN.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        body = vignette_request("V01-ces-positive")
        answer = requests.post(f"{service.url}/cds-services/{PATIENT_VIEW}", json=body, timeout=30)
        assert answer.status_code == 200 and answer.json()["cards"]
        assert stub.accepted.wait(DEADLINE_S)  # the delivery worker holds the token and sends it
        log = service.log()
    assert set(stub.authorizations) == {f"Bearer {TOKEN}"}
    assert TOKEN not in log
    warned = [json.loads(line) for line in log.splitlines() if "fhir_token_on_command_line" in line]
    assert len(warned) == (1 if given == "command line" else 0)


def redflags(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "REDFLAGS_FHIR_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def test_replay_and_outbox_flush_deliver_with_the_token_file(tmp_path: Path, stub: FhirStub) -> None:
    secret = token_file(tmp_path)
    queued = redflags("replay", str(V01), "--now", NOW, "--state", str(tmp_path / "a.sqlite"))
    assert queued.returncode == 0, queued.stderr
    flushed = redflags(
        "outbox", "flush", "--state", str(tmp_path / "a.sqlite"), "--fhir-server", stub.url,
        "--fhir-token-file", str(secret), "--delivery-wait", "0",
    )  # fmt: skip
    assert flushed.returncode == 0 and "delivered 1" in flushed.stdout, flushed.stderr
    replayed = redflags(
        "replay", str(V01), "--now", NOW, "--state", str(tmp_path / "b.sqlite"), "--fhir-server", stub.url,
        "--fhir-token-file", str(secret), "--delivery-wait", "0",
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert stub.authorizations == [f"Bearer {TOKEN}"] * 2
    assert TOKEN not in flushed.stderr + replayed.stderr + flushed.stdout + replayed.stdout


def _flush(tmp_path: Path) -> tuple[str, ...]:
    """``outbox flush`` of an empty store towards a port nothing listens on: the options decide."""
    state, server = str(tmp_path / "s.sqlite"), "http://127.0.0.1:9"
    return ("outbox", "flush", "--state", state, "--fhir-server", server, "--delivery-wait", "0")


def test_token_options_refuse_bad_use_with_one_line_and_never_echo_the_token(tmp_path: Path) -> None:
    flush = _flush(tmp_path)
    both = redflags(*flush, "--fhir-token-file", str(token_file(tmp_path)), "--fhir-token", TOKEN)
    assert both.returncode == 2 and both.stderr.strip().splitlines()[-1] == (
        "Error: give --fhir-token (or $REDFLAGS_FHIR_TOKEN) or --fhir-token-file, not both"
    )
    env_and_file = redflags(
        *flush, "--fhir-token-file", str(token_file(tmp_path)), env={"REDFLAGS_FHIR_TOKEN": TOKEN}
    )
    assert env_and_file.returncode == 2 and "not both" in env_and_file.stderr
    two_lines = token_file(tmp_path, f"{TOKEN}\nsecond-{TOKEN}\n")
    bad = redflags(*flush, "--fhir-token-file", str(two_lines))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for --fhir-token-file: {two_lines}: not one bearer token "
        "(one line, RFC 6750 characters)"
    )
    for run in (both, env_and_file, bad):
        assert TOKEN not in run.stderr + run.stdout


def test_a_token_on_the_command_line_or_in_a_shared_file_is_warned_about(tmp_path: Path) -> None:
    flush = _flush(tmp_path)
    on_argv = redflags(*flush, "--fhir-token", TOKEN)
    events = [json.loads(line)["event"] for line in on_argv.stderr.splitlines() if line.startswith("{")]
    assert "fhir_token_on_command_line" in events
    assert TOKEN not in on_argv.stderr
    from_env = redflags(*flush, env={"REDFLAGS_FHIR_TOKEN": TOKEN})
    assert "fhir_token_on_command_line" not in from_env.stderr
    shared = token_file(tmp_path)
    shared.chmod(0o644)
    readable = redflags(*flush, "--fhir-token-file", str(shared))
    assert "fhir_token_file_shared" in readable.stderr and TOKEN not in readable.stderr


def test_settings_in_the_environment_carry_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``serve`` hands the app factory through the environment (every child inherits it)."""
    from redflags.service import settings as settings_module
    from redflags.service.settings import ENV, ServiceSettings

    monkeypatch.setenv("REDFLAGS_FHIR_TOKEN", TOKEN)
    monkeypatch.delenv(ENV, raising=False)
    ServiceSettings(fhir_server="http://127.0.0.1:9", fhir_token=TOKEN, state="s.sqlite").to_env()
    try:
        assert TOKEN not in os.environ[ENV] and "REDFLAGS_FHIR_TOKEN" not in os.environ
        assert ServiceSettings.from_env().fhir_token == TOKEN  # this process keeps it, in memory
        child = subprocess.run(
            [sys.executable, "-c", "from redflags.service.settings import ServiceSettings as S;"
             "print(S.from_env().fhir_token)"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert child.stdout.strip() == "None"
    finally:
        os.environ.pop(ENV, None)
        settings_module._secrets.clear()  # other tests of this process must not inherit it
