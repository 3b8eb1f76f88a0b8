"""The running service (``redflags serve``) never hangs on one call: real processes, real HTTP.

A resource nested too deeply to hand to an engine, a stopped engine process, SIGTERM while a
call is stuck: each call ends with a JSON OperationOutcome within its deadline, the next call
is served, and the service stops within its grace period.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from .conftest import FIXTURES
from .service_harness import Service, running_service

NOW = "2025-03-10T12:00:00Z"
VIGNETTE = FIXTURES / "vignettes" / "V01-ces-positive.json"
#: Bound on anything awaited here: reached only when the service hangs (the defect).
BOUND_S = 60


def _bundle() -> dict[str, Any]:
    return json.loads(VIGNETTE.read_text())


def _evaluate(service: Service, body: bytes | None = None) -> requests.Response:
    return requests.post(
        f"{service.url}/fhir/$evaluate",
        data=body if body is not None else json.dumps(_bundle()),
        headers={"Content-Type": "application/fhir+json"},
        timeout=BOUND_S,
    )


def _assert_outcome(answer: requests.Response, statuses: set[int]) -> dict[str, Any]:
    assert answer.status_code in statuses, (answer.status_code, answer.text)
    assert answer.headers["content-type"].startswith(("application/json", "application/fhir+json"))
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["diagnostics"]
    return body


def _engine_pids(service: Service) -> list[int]:
    """The engine processes: the service process's children."""
    pid = service.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children]


def _until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not predicate():
        assert time.monotonic() < deadline, f"not within {BOUND_S} s: {what}"
        time.sleep(0.05)


def _ready(service: Service) -> bool:
    return requests.get(f"{service.url}/readyz", timeout=BOUND_S).status_code == 200


def _gone(pid: int) -> bool:
    """Ended: no such process, or a zombie waiting for a reaper that is not its old parent."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class _EmptyFhirServer(http.server.ThreadingHTTPServer):
    """A loopback FHIR server with no data: every search is an empty searchset."""

    daemon_threads = True

    def __init__(self) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = json.dumps({"resourceType": "Bundle", "type": "searchset", "entry": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/fhir"


@contextlib.contextmanager
def _fhir_server() -> Iterator[_EmptyFhirServer]:
    server = _EmptyFhirServer()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _cds_body(patient: dict[str, Any], fhir_server: str) -> bytes:
    """A patient-view call whose prefetched Patient holds an object nested 950 deep (built as
    text: no recursion here); the other prefetch keys are absent, so they are read from
    ``fhir_server``, and the whole record then goes to an engine."""
    deep = '{"extension":' * 950 + "{}" + "}" * 950
    call = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
        "prefetch": {"Patient": {**patient, "text": "DEEP"}},
    }
    return json.dumps(call).replace('"DEEP"', deep).encode()


def test_a_resource_nested_too_deeply_is_refused_and_the_next_calls_are_served(tmp_path: Path) -> None:
    args = ("--allow-unauthenticated", "--allow-http-fhir", "--now", NOW, "--fhir-timeout", "5")
    with running_service(tmp_path, *args) as service, _fhir_server() as ehr:
        (patient,) = [e["resource"] for e in _bundle()["entry"] if e["resource"]["resourceType"] == "Patient"]
        body = _cds_body(patient, ehr.url)
        answer = requests.post(
            f"{service.url}/cds-services/redflags-patient-view",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=BOUND_S,
        )
        assert "nested too deeply" in _assert_outcome(answer, {422})["issue"][0]["diagnostics"]
        assert _evaluate(service).status_code == 200  # the engine is still there
        assert requests.get(f"{service.url}/healthz", timeout=BOUND_S).status_code == 200
        answer = requests.post(
            f"{service.url}/cds-services/redflags-patient-view",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=BOUND_S,
        )
        _assert_outcome(answer, {422})  # again: nothing was lost the first time
        assert _evaluate(service).status_code == 200


def test_a_stopped_engine_fails_its_call_at_the_deadline_and_is_replaced(tmp_path: Path) -> None:
    args = ("--allow-unauthenticated", "--no-state", "--now", NOW, "--call-deadline", "2")
    with running_service(tmp_path, *args) as service:
        assert _evaluate(service).status_code == 200
        (engine,) = _engine_pids(service)
        os.kill(engine, signal.SIGSTOP)
        stuck = _evaluate(service)
        _assert_outcome(stuck, {503})  # the engine's fault, not the caller's: try again shortly
        assert stuck.headers["retry-after"]
        _until(lambda: _ready(service), "a new engine serves")
        assert _engine_pids(service) != [engine] and _gone(engine)
        assert _evaluate(service).status_code == 200
        health = requests.get(f"{service.url}/healthz", timeout=BOUND_S).json()
        assert health["engines"]["alive"] == 1 and health["status"] == "ok"
        assert '"event": "engine_call_timeout"' in service.log()


def test_sigterm_with_a_stuck_call_ends_the_service_within_its_grace(tmp_path: Path) -> None:
    args = ("--allow-unauthenticated", "--no-state", "--now", NOW)
    args += ("--call-deadline", "600", "--shutdown-grace", "1")  # the deadline cannot rescue it
    with running_service(tmp_path, *args) as service:
        (engine,) = _engine_pids(service)
        os.kill(engine, signal.SIGSTOP)
        answers: list[requests.Response | Exception] = []

        def stuck_call() -> None:
            try:
                answers.append(_evaluate(service))
            except requests.RequestException as exc:
                answers.append(exc)

        caller = threading.Thread(target=stuck_call)
        caller.start()
        _until(
            lambda: requests.get(f"{service.url}/readyz", timeout=BOUND_S).json()["engines"]["busy"] == 1,
            "the call reaches the stopped engine",
        )
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=BOUND_S) in (0, -signal.SIGTERM)  # uvicorn re-raises it
        caller.join(BOUND_S)
        assert not caller.is_alive()
        (answer,) = answers
        if isinstance(answer, requests.Response):  # abandoned with an answer, not plain text
            _assert_outcome(answer, {503})
        _until(lambda: _gone(engine), "the stopped engine is killed")
