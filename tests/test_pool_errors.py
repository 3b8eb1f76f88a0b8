"""Every error answer is JSON: an exception no endpoint expected becomes an OperationOutcome.

The real application in uvicorn on 127.0.0.1, over real HTTP, with a fault put in its way
(pytest's monkeypatch): FHIR endpoints answer ``application/fhir+json``, the others the JSON
the CDS endpoints use for their errors; never Starlette's plain-text 500, never the message.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from redflags.service.app import create_app
from redflags.service.cds import routes as cds
from redflags.service.settings import ServiceSettings

from .conftest import FIXTURES
from .service_harness import running_service, serving_app

SECRET = "Jane Doe 1970-01-01"  # what an exception message may carry: never sent, never logged
BOUND_S = 60


class _Exploding:
    """An authenticator whose every use fails (a bug in a dependency of every endpoint)."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(SECRET)


@contextlib.contextmanager
def _in_process(tmp: Path) -> Iterator[str]:
    settings = ServiceSettings(allow_unauthenticated=True, feedback_db=str(tmp / "feedback.sqlite"))
    app = create_app(settings)
    app.state.auth = _Exploding()
    with serving_app(app, BOUND_S) as url:
        yield url


def _assert_json_error(answer: requests.Response, media_type: str, status: int = 500) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].split(";")[0] == media_type
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "exception"
    assert SECRET not in answer.text


def test_unexpected_errors_answer_json_never_plain_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> dict[str, Any]:
        raise KeyError(SECRET)

    monkeypatch.setattr(cds, "discovery_document", broken)
    bundle = (FIXTURES / "vignettes" / "V01-ces-positive.json").read_bytes()
    with _in_process(tmp_path) as url:
        fhir = requests.post(
            f"{url}/fhir/$evaluate",
            data=bundle,
            headers={"Content-Type": "application/fhir+json"},
            timeout=BOUND_S,
        )
        _assert_json_error(fhir, "application/fhir+json")
        call = requests.post(
            f"{url}/cds-services/redflags-patient-view",
            data=b"{}",
            headers={"Content-Type": "application/json"},
            timeout=BOUND_S,
        )
        _assert_json_error(call, "application/json")
        _assert_json_error(requests.get(f"{url}/cds-services", timeout=BOUND_S), "application/json")
        assert requests.get(f"{url}/healthz", timeout=BOUND_S).status_code == 200  # still serving
    logged = capsys.readouterr()
    assert SECRET not in logged.out + logged.err
    assert "unhandled_error" in logged.out + logged.err


class _FhirServer(http.server.ThreadingHTTPServer):
    """A loopback FHIR server whose answers are faulty in the way ``respond`` says."""

    daemon_threads = True

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                respond(self)

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def _next_link_to_port_99999(handler: http.server.BaseHTTPRequestHandler) -> None:
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": "http://127.0.0.1:99999/fhir/Condition?page=2"}],
    }
    data = json.dumps(page).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def _truncated_body(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", "1000")
    handler.end_headers()
    handler.wfile.write(b'{"resourceType": ')
    handler.close_connection = True


@pytest.mark.parametrize(
    "respond", [_next_link_to_port_99999, _truncated_body], ids=["port-99999", "truncated"]
)
def test_fhir_server_faults_answer_json(
    tmp_path: Path, respond: Callable[[http.server.BaseHTTPRequestHandler], None]
) -> None:
    """URL and protocol errors of the HTTP library (plain-text 500s before): a JSON answer."""
    vignette = json.loads((FIXTURES / "vignettes" / "V01-ces-positive.json").read_text())
    (patient,) = [e["resource"] for e in vignette["entry"] if e["resource"]["resourceType"] == "Patient"]
    ehr = _FhirServer(respond)
    call = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": f"http://127.0.0.1:{ehr.server_address[1]}/fhir",
        "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
        "prefetch": {"Patient": patient},
    }
    args = ("--allow-unauthenticated", "--allow-http-fhir", "--no-state", "--fhir-timeout", "5")
    try:
        with running_service(tmp_path, *args) as service:
            url = f"{service.url}/cds-services/redflags-patient-view"
            answer = requests.post(url, json=call, timeout=BOUND_S)
            assert 400 <= answer.status_code < 600
            assert answer.headers["content-type"].startswith("application/json"), answer.text
            assert answer.json()["resourceType"] == "OperationOutcome"
            assert requests.get(f"{service.url}/healthz", timeout=BOUND_S).status_code == 200
    finally:
        ehr.shutdown()
        ehr.server_close()
