"""A CDS call decodes its body once and crosses to an engine process once (issue 13 item 6).

The real application in uvicorn on 127.0.0.1 with one real engine process, over real HTTP. In
this (the HTTP) process ``orjson.loads`` and ``EnginePool.run`` are counted; the engine
process writes the digest of every JSON text it decodes to a file (``onepath_helpers``). With
the prefetch complete, and with it incomplete (the rest read from a loopback FHIR server):
the body is decoded once in all, and the engine reached once. On b855ee8 the incomplete call
decoded the body three times (engine, HTTP process, engine again) and crossed twice.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import uvicorn

from redflags.service import app as service_app
from redflags.service.settings import ServiceSettings
from redflags.workers.pool import EnginePool

from . import onepath_helpers
from .cds_helpers import PATIENT_VIEW, VIGNETTES, prefetch_for, request, resources_of, searchset
from .service_harness import free_port

NOW = "2025-03-10T12:00:00Z"
BOUND_S = 60


@contextlib.contextmanager
def _fhir_server() -> Iterator[str]:
    """A loopback FHIR server: every search answers an empty searchset."""
    data = json.dumps(searchset([])).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def _service(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    settings = ServiceSettings(
        allow_unauthenticated=True,
        allow_http_fhir=True,
        now=NOW,
        feedback_db=str(tmp / "feedback.sqlite"),
        engine_processes=1,
    )

    def counting_pool(
        processes: int,
        config_path: str | None,
        log_level: str,
        state: str | None = None,
        queue: bool = False,
        retention_days: int | None = None,
        deadline_s: float = 60.0,
    ) -> EnginePool:
        """``engine_host.engine_pool`` whose engine processes write down their decodes."""
        args = (config_path, state, queue, retention_days)
        return EnginePool(processes, onepath_helpers.counting_start, args, log_level, deadline_s=deadline_s)

    monkeypatch.setattr(service_app, "engine_pool", counting_pool)
    app = service_app.create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + BOUND_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(BOUND_S)


Measure = Callable[[bytes], tuple[int, int]]


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Measure]]:
    """The service URL and ``measure(body)``: (decodes of that body in both processes, crossings)."""
    engine_log = tmp_path / "engine-decodes.txt"
    engine_log.touch()
    monkeypatch.setenv(onepath_helpers.DECODES_ENV, str(engine_log))
    here: list[str] = []
    crossings: list[str] = []
    loads, run = orjson.loads, EnginePool.run

    def counted_loads(data: Any) -> Any:
        here.append(onepath_helpers.digest(data))
        return loads(data)

    async def counted_run(self: EnginePool, fn: Callable[..., Any], *args: object) -> Any:
        crossings.append(getattr(fn, "__name__", "?"))
        return await run(self, fn, *args)

    monkeypatch.setattr(orjson, "loads", counted_loads)
    monkeypatch.setattr(EnginePool, "run", counted_run)

    with _service(tmp_path, monkeypatch) as url:

        def measure(body: bytes) -> tuple[int, int]:
            here.clear()
            crossings.clear()
            engine_log.write_text("")
            answer = requests.post(
                f"{url}/cds-services/{PATIENT_VIEW}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=BOUND_S,
            )
            assert answer.status_code == 200, answer.text
            assert [c["summary"] for c in answer.json()["cards"]], "the vignette raises its alert"
            key = onepath_helpers.digest(body)
            there = engine_log.read_text().split()
            return here.count(key) + there.count(key), len(crossings)

        yield url, measure


def _body(complete: bool, fhir_server: str | None = None) -> bytes:
    resources = resources_of(VIGNETTES / "V01-ces-positive.json")
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    prefetch = prefetch_for(resources)
    extra: dict[str, Any] = {}
    if not complete:  # the procedures are read from fhirServer (it has none)
        del prefetch["Procedure"]
        extra["fhirServer"] = fhir_server
    return json.dumps(request("patient-view", patient["id"], prefetch, **extra)).encode()


def test_a_call_with_complete_prefetch_decodes_once_and_crosses_once(counted: tuple[str, Measure]) -> None:
    _url, measure = counted
    assert measure(_body(complete=True)) == (1, 1)


def test_a_call_with_incomplete_prefetch_decodes_once_and_crosses_once(counted: tuple[str, Measure]) -> None:
    _url, measure = counted
    with _fhir_server() as ehr:
        assert measure(_body(complete=False, fhir_server=ehr)) == (1, 1)


def test_the_count_sees_decodes_in_the_engine_process(counted: tuple[str, Measure]) -> None:
    """Not vacuous: a decode in the engine process is counted (``$evaluate`` decodes its body there)."""
    url, _measure = counted
    body = (VIGNETTES / "V01-ces-positive.json").read_bytes()
    log_path = Path(os.environ[onepath_helpers.DECODES_ENV])
    log_path.write_text("")
    answer = requests.post(
        f"{url}/fhir/$evaluate", data=body, headers={"Content-Type": "application/fhir+json"}, timeout=BOUND_S
    )
    assert answer.status_code == 200, answer.text
    assert log_path.read_text().split().count(onepath_helpers.digest(body)) == 1
