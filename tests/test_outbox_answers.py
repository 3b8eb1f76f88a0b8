"""Issue 10, item 10: whatever the FHIR server answers, an outbox item ends in a definite state.

Each bad answer is given to the first item of a pass by the fault proxy in front of the real
FHIR server (Medplum's router); the second item of the same pass goes through unchanged. The
bad item must end delivered, retry-later (one attempt counted, next attempt within the bound)
or failed with a reason, and the second item must be delivered in that same pass.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from fhir_adapters.fhir_client import FhirClient, RetryPolicy, retry_after_seconds
from redflags.delivery.sender import MAX_RETRY_S, deliver_due, retry_delay
from redflags.state.sqlite_store import SqliteStateStore

from .fault_proxy import FaultProxy, fault_proxy
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401 (pytest fixture)
from .writeback_helpers import NOW, positives, redflags

ONE_SHOT = RetryPolicy(attempts=1)  # the bad answer is the item's answer in this pass
ENTRY_OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "CarePlan.status: bad code"}],
}


def _response(*statuses: object) -> bytes:
    entries = [{"response": {"status": s}} if s is not None else {"response": {}} for s in statuses]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


def _with_entries(entries: object) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})


def _failing_entry() -> bytes:
    doc = orjson.loads(_response("200 OK", "201 Created", "404 Not Found"))
    doc["entry"][2]["response"]["outcome"] = ENTRY_OUTCOME
    return orjson.dumps(doc)


#: name -> (script the proxy, the bad item's expected end state)
ANSWERS: dict[str, tuple[Callable[[FaultProxy], None], str]] = {
    # a web page is no FHIR server: a configuration error, which ends the pass (issue 12)
    "200 not JSON": (lambda p: p.answer(200, b"<html>OK</html>", {"Content-Type": "text/html"}), "config"),
    "200 JSON list": (lambda p: p.answer(200, b"[]", {"Content-Type": "application/fhir+json"}), "retry"),
    "200 JSON string": (lambda p: p.answer(200, b'"ok"'), "retry"),
    "200 not a Bundle": (lambda p: p.answer(200, b'{"resourceType": "Patient"}'), "retry"),
    "200 entry not an object": (
        lambda p: p.answer(200, _with_entries([{"response": {"status": "200 OK"}}, "x"])),
        "retry",
    ),
    "200 entry without status": (lambda p: p.answer(200, _response("200 OK", None)), "retry"),
    "200 entry answered 404": (lambda p: p.answer(200, _failing_entry()), "failed"),
    "200 entry answered 503": (lambda p: p.answer(200, _response("200 OK", "503")), "retry"),
    "503 Retry-After 1e20": (lambda p: p.fail(503, retry_after="1e20"), "retry"),
    "503 Retry-After 10^20 s": (lambda p: p.fail(503, retry_after="1" + "0" * 20), "retry"),
    "503 Retry-After 10^400 s": (lambda p: p.fail(503, retry_after="9" * 400), "retry"),
    "503 Retry-After -5": (lambda p: p.fail(503, retry_after="-5"), "retry"),
    "503 Retry-After NaN": (lambda p: p.fail(503, retry_after="NaN"), "retry"),
    "503 Retry-After garbage": (lambda p: p.fail(503, retry_after="soon, please"), "retry"),
    "503 Retry-After year 9999": (
        lambda p: p.fail(503, retry_after="Fri, 31 Dec 9999 23:59:59 GMT"),
        "retry",
    ),
    "200 reset mid-body": (lambda p: p.reset_mid_body(), "retry"),
    "no answer (connection closed)": (lambda p: p.drop(), "retry"),
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state file holding two pending items (patients oa and ob), built by ``redflags replay``."""
    folder = tmp_path_factory.mktemp("answers")
    positives(folder / "in", "o", 2)
    state = folder / "state.sqlite"
    run = redflags("replay", str(folder / "in"), "--now", NOW, "--state", str(state))
    assert run.returncode == 0, run.stderr
    return state


@pytest.fixture
def store(template: Path, tmp_path: Path) -> Iterator[SqliteStateStore]:
    shutil.copy(template, tmp_path / "state.sqlite")
    opened = SqliteStateStore.open(tmp_path / "state.sqlite")
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def proxy(fhir_server: FhirServer) -> Iterator[FaultProxy]:  # noqa: F811
    with fault_proxy(fhir_server.url) as running:
        yield running


@pytest.mark.parametrize("name", list(ANSWERS))
def test_every_answer_ends_in_a_definite_state_and_the_pass_goes_on(
    name: str,
    store: SqliteStateStore,
    proxy: FaultProxy,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    script, expected = ANSWERS[name]
    first, second = store.deliveries("pending")
    assert (first.patient, second.patient) == ("Patient/o0", "Patient/o1")
    script(proxy)
    now = int(time.time())
    with FhirClient(proxy.url, retry=ONE_SHOT, timeout_s=5) as client:
        done = deliver_due(store, client, now)

    if expected == "config":  # the pass stopped: the next item was not sent to that server
        (bad,) = [d for d in store.deliveries() if d.id == first.id]
        (untried,) = [d for d in store.deliveries() if d.id == second.id]
        assert done.config_error and (done.delivered, done.retried) == (0, 1)
        assert bad.status == "pending" and bad.attempts == 1 and now < bad.next_attempt <= now + MAX_RETRY_S
        assert (untried.status, untried.attempts, len(proxy.seen)) == ("pending", 0, 1)
        return
    assert done.delivered == 1 and done.delivered + done.failed + done.retried == 2
    (bad,) = [d for d in store.deliveries() if d.id == first.id]
    (good,) = [d for d in store.deliveries() if d.id == second.id]
    assert good.status == "delivered"
    assert fhir_server.search("Flag?subject=Patient/o1")
    assert bad.attempts == 1 and bad.last_error, bad
    if expected == "failed":
        assert bad.status == "failed" and "404" in bad.last_error
        assert bad.outcome == ENTRY_OUTCOME
    else:
        assert bad.status == "pending"
        assert now < bad.next_attempt <= now + MAX_RETRY_S
        assert len(proxy.seen) == 2  # not sent again within the pass


def test_retry_after_is_read_as_a_bounded_number_of_seconds() -> None:
    now = 1_000_000.0
    for text in ("1e20", "-5", "NaN", "inf", "soon", "\u0661\u0662", "Tue, 99 Foo 2020", ""):
        assert retry_after_seconds(text, now) is None, text
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("9" * 400, now) == 86_400.0
    assert retry_after_seconds("Fri, 31 Dec 9999 23:59:59 GMT", now) == 86_400.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:00 GMT", now) == 0.0
    for after in (None, 0.0, 0.2, 5.0, 1e20, float("inf"), float("nan"), -5.0):
        for attempts in (1, 2, 10, 10_000):
            assert 1 <= retry_delay(attempts, after) <= MAX_RETRY_S, (attempts, after)


@pytest.mark.parametrize("in_body", [False, True], ids=["headers", "body"])
def test_a_dripping_server_cannot_hold_a_send_past_its_timeout(
    in_body: bool,
    store: SqliteStateStore,
    proxy: FaultProxy,
) -> None:
    """One byte every 0.2 s: every read is in time, the answer never ends. The client's 1 s is
    for the whole exchange, so the pass goes on (the old client waited for ever)."""
    proxy.drip(0.2, in_body=in_body)
    now = int(time.time())
    outcome: list[object] = []

    def deliver() -> None:
        with FhirClient(proxy.url, retry=ONE_SHOT, timeout_s=1) as client:
            outcome.append(deliver_due(store, client, now))

    worker = threading.Thread(target=deliver, daemon=True)
    worker.start()
    worker.join(60)  # a bound for the test, not a timing assertion: without the fix it never ends
    assert not worker.is_alive(), "the send is still held by the dripping server"
    (done,) = outcome
    assert done.delivered == 1 and done.retried == 1  # type: ignore[attr-defined]
    (bad,) = [d for d in store.deliveries() if d.status == "pending"]
    assert bad.attempts == 1 and "no answer within 1 s" in (bad.last_error or "")
