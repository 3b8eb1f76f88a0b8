"""Issue 12, operator follow-ups: the outbox audit trail shows an item's whole life (delivered
and configuration-error deferrals too), the last status has its own column, ``outbox status``
blanks patient references, and the service's worker ends a pass at a configuration error.

Real components: Medplum's FHIR router (reference checks on), a tiny HTTP server on 127.0.0.1
that is not a FHIR server, ``redflags`` run as a process on real SQLite files, the service's
outbox worker on a real event loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

from fhir_adapters.fhir_client import FhirClient
from redflags.delivery.outbox_loop import OutboxWorker
from redflags.state.model import Evaluated, NewDelivery
from redflags.state.sqlite_store import SqliteStateStore

from .fhir_server_harness import FhirServer
from .operator_helpers import _NotFhir, events, html_404, items, one_patient, replay_to, run, strict_server

__all__ = ["html_404", "strict_server"]  # fixtures used here

BUNDLE = {"resourceType": "Bundle", "type": "transaction", "entry": []}


def _queued(state: Path, patients: list[str]) -> list[int]:
    """One pending item per patient, as replay would queue them."""
    store = SqliteStateStore.open(state)
    try:
        return [
            item
            for patient in patients
            for item in store.commit(
                Evaluated(patient, 0, deliveries=[NewDelivery(patient, "r", "raised", BUNDLE)])
            )
        ]
    finally:
        store.close()


def test_the_events_of_an_item_show_its_whole_life(
    tmp_path: Path, html_404: str, strict_server: FhirServer
) -> None:
    patient = "oplife"
    resources = one_patient(tmp_path, patient)
    state = tmp_path / "state.sqlite"
    assert replay_to(tmp_path, html_404, "--delivery-wait", "5").returncode == 1  # wrong URL
    flush = ("outbox", "flush", "--state", "state.sqlite", "--fhir-server", strict_server.url)
    assert run(tmp_path, *flush).returncode == 1  # the server does not hold the patient: 400
    strict_server.load(resources[patient])
    (item,) = items(state)
    assert run(tmp_path, "outbox", "retry", str(item.id), "--state", "state.sqlite").returncode == 0
    assert run(tmp_path, *flush).returncode == 0

    trail = [(e.before, e.after, e.actor) for e in events(state)]
    assert trail == [
        ("pending", "pending", "delivery"),  # configuration error: deferred, not failed
        ("pending", "failed", "delivery"),
        ("failed", "pending", "operator"),
        ("pending", "delivered", "delivery"),
    ]
    shown = run(tmp_path, "outbox", "list", "--events", str(item.id), "--state", "state.sqlite")
    assert shown.returncode == 0, shown.stderr
    header, *rows = shown.stdout.splitlines()
    assert header.split("\t") == ["item", "at", "from", "to", "actor", "reason"]
    assert [row.split("\t")[2:5] for row in rows] == [list(t) for t in trail]
    assert "does not answer as a FHIR server" in rows[0] and "HTTP 400" in rows[1]
    assert patient not in shown.stdout
    as_json = run(
        tmp_path,
        "outbox",
        "list",
        "--events",
        str(item.id),
        "--json",
        "--show-patient",
        "--state",
        "state.sqlite",
    )
    docs = json.loads(as_json.stdout)
    assert [d["to"] for d in docs] == ["pending", "failed", "pending", "delivered"]
    assert {d["patient"] for d in docs} == {f"Patient/{patient}"}
    # the last status of each attempt was stored, not read back out of the reason text
    with sqlite3.connect(state) as conn:
        assert conn.execute("SELECT last_status FROM outbox").fetchall() == [("delivered",)]


def test_the_last_status_is_stored_not_read_out_of_the_reason(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    first, second = _queued(state, ["Patient/opst1", "Patient/opst2"])
    store = SqliteStateStore.open(state)
    try:  # reasons quoting other numbers: a server's diagnostics say anything
        store.mark_failed(first, "POST /: HTTP 422 (code 404 is not allowed in element 200)", None, "422")
        store.mark_retry(second, 10**10, "POST /: cannot connect (refused by policy 500)", "no connection")
    finally:
        store.close()
    listed = run(tmp_path, "outbox", "list", "--json", "--state", "state.sqlite")
    assert listed.returncode == 0, listed.stderr
    assert [(d["item"], d["last_status"]) for d in json.loads(listed.stdout)] == [
        (first, "422"),
        (second, "no connection"),
    ]


def test_status_blanks_patient_references_unless_asked(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    (item,) = _queued(state, ["Patient/opstatus7"])
    store = SqliteStateStore.open(state)
    try:
        store.mark_failed(item, "POST /: HTTP 400 (Resource Patient/opstatus7 not found)", None)
    finally:
        store.close()
    hidden = run(tmp_path, "outbox", "status", "--state", "state.sqlite")
    assert hidden.returncode == 1
    assert "opstatus7" not in hidden.stdout + hidden.stderr
    assert f"failed item {item}: r raised: POST /: HTTP 400 (Resource Patient/… not found)" in hidden.stderr
    shown = run(tmp_path, "outbox", "status", "--show-patient", "--state", "state.sqlite")
    assert shown.returncode == 1 and "Patient/opstatus7 not found" in shown.stderr


class _Counting(_NotFhir):
    """The HTML 404 server, counting the requests it answered."""

    seen: ClassVar[list[str]] = []

    def _answer(self) -> None:
        super()._answer()
        self.seen.append(self.path)

    do_GET = do_POST = do_PUT = _answer


@pytest.fixture
def counting_404() -> Iterator[tuple[str, list[str]]]:
    seen: ClassVar[list[str]] = []
    handler = type("Handler", (_Counting,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_service_worker_ends_its_pass_at_a_configuration_error(
    tmp_path: Path, counting_404: tuple[str, list[str]]
) -> None:
    url, seen = counting_404
    state = tmp_path / "state.sqlite"
    patients = [f"Patient/opworker{n}" for n in range(3)]
    _queued(state, patients)

    async def one_pass_at_least() -> None:
        worker = OutboxWorker(SqliteStateStore.open(state), FhirClient(url))
        deadline = time.monotonic() + 60
        try:
            while not seen and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # waits on a condition (a request answered), bounded
            while time.monotonic() < deadline and not any(
                e["event"] == "outbox_configuration_error" for e in logs
            ):
                await asyncio.sleep(0.05)
        finally:
            await worker.stop()

    with capture_logs() as logs:
        asyncio.run(one_pass_at_least())
    passes = [e for e in logs if e["event"] == "outbox_configuration_error"]
    assert passes, logs
    # one send per pass: the pass stopped at the first configuration error (and said so once)
    assert len(seen) == len(passes)
    assert sum(i.attempts for i in items(state)) == len(passes)
    assert not [e for e in logs if "config" in e["event"] and e["event"] != "outbox_configuration_error"]
    assert all("does not answer as a FHIR server" in e["detail"] for e in passes)
    assert "opworker" not in repr(logs)
