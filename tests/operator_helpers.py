"""Operator tests: ``redflags`` in a chosen folder, outbox readers and servers that refuse."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from redflags.state.sqlite_store import SqliteStateStore

from .conftest import ROOT
from .fhir_server_harness import FhirServer, FhirServerUnavailable, running_fhir_server
from .writeback_helpers import NOW, v01, write


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``redflags`` in ``cwd`` (relative paths land there), with the package from the checkout."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDFLAGS_")}
    clean["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


@pytest.fixture(scope="module")
def strict_server() -> Iterator[FhirServer]:
    """Medplum refusing references to resources it does not hold (a missing Patient: 400)."""
    before = os.environ.get("FHIR_TEST_CHECK_REFERENCES")
    os.environ["FHIR_TEST_CHECK_REFERENCES"] = "1"
    try:
        with running_fhir_server() as server:
            os.environ.pop("FHIR_TEST_CHECK_REFERENCES")
            yield server
    except FhirServerUnavailable as exc:
        pytest.skip(str(exc))
    finally:
        if before is not None:
            os.environ["FHIR_TEST_CHECK_REFERENCES"] = before


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NotFhir(BaseHTTPRequestHandler):
    """Answers every request 404, with a web page or (``json_404``) an OperationOutcome."""

    json_404 = False

    def log_message(self, *_args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.json_404:
            body = json.dumps(
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "not-found", "diagnostics": "Not found"}],
                }
            ).encode()
            kind = "application/fhir+json"
        else:
            body, kind = b"<html><body><h1>404 Not Found</h1></body></html>", "text/html; charset=utf-8"
        self.send_response(404)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer


def _not_fhir_server(json_404: bool) -> Iterator[str]:
    handler = type("Handler", (_NotFhir,), {"json_404": json_404})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def html_404() -> Iterator[str]:
    yield from _not_fhir_server(json_404=False)


@pytest.fixture
def json_404() -> Iterator[str]:
    yield from _not_fhir_server(json_404=True)


def items(state: Path) -> list:
    store = SqliteStateStore.open(state, create=False)
    try:
        return store.deliveries()
    finally:
        store.close()


def events(state: Path) -> list:
    store = SqliteStateStore.open(state, create=False)
    try:
        return store.outbox_events()
    finally:
        store.close()


def replay_to(folder: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run(folder, "replay", "in", "--now", NOW, "--state", "state.sqlite", "--fhir-server", url, *extra)


def one_patient(folder: Path, patient: str) -> dict[str, dict]:
    """V01 (one cauda equina alert) for ``patient`` as one input file; its resources by id."""
    resources = v01(patient)
    (folder / "in").mkdir(parents=True)
    entries = [{"resource": r} for r in resources.values()]
    write(
        folder / "in" / f"{patient}.json", {"resourceType": "Bundle", "type": "collection", "entry": entries}
    )
    return resources
