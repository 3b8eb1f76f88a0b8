"""Issue 12, items 2 and 4: failed deliveries can be listed and retried; a wrong URL is a
configuration error; every item not delivered says why.

Real components: Medplum's FHIR router (tests/fhir_server_harness.py), with reference checks
on (``FHIR_TEST_CHECK_REFERENCES=1``) so that an alert for a patient the server does not hold
is refused with a 400 OperationOutcome; a closed port on 127.0.0.1 (connection refused); a
tiny HTTP server on 127.0.0.1 answering 404 with an HTML page or a JSON OperationOutcome (a
base URL that is not a FHIR server); ``redflags`` run as a process on real files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from redflags.state.sqlite_store import SqliteStateStore

from .fault_proxy import fault_proxy
from .fhir_server_harness import FhirServer, FhirServerUnavailable, running_fhir_server
from .operator_helpers import (
    closed_port,
    events,
    html_404,
    items,
    json_404,
    one_patient,
    replay_to,
    run,
    strict_server,
)
from .writeback_helpers import positives

__all__ = ["closed_port", "html_404", "json_404", "strict_server"]  # fixtures used here


# -- item 4: every item not delivered says why ------------------------------------------------
def test_with_the_server_down_each_item_says_connection_refused(tmp_path: Path, closed_port: int) -> None:
    positives(tmp_path / "in", "opdown", 2)
    url = f"http://127.0.0.1:{closed_port}/fhir/R4"
    done = replay_to(tmp_path, url, "--delivery-wait", "0")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    refused = [line for line in lines if line.startswith("outbox item ")]
    assert len(refused) == 2, done.stderr
    for line in refused:
        assert line.endswith("pending: POST /fhir/R4: connection refused"), line
        assert "(cauda_equina_syndrome raised)" in line
    (summary,) = [line for line in lines if line.startswith("outbox: ")]
    assert summary.endswith("pending 2, failed 0, delivered 0; not delivered: connection refused 2")
    assert "opdown" not in done.stderr  # no patient identifier, in lines or logs

    flush = run(
        tmp_path, "outbox", "flush", "--state", "state.sqlite", "--fhir-server", url, "--delivery-wait", "0"
    )
    assert flush.returncode == 1
    assert [line for line in flush.stderr.splitlines() if "connection refused" in line][:2] == refused
    assert flush.stdout.strip().endswith("not delivered: connection refused 2")


def test_a_refusal_names_the_status_and_the_servers_diagnostics(
    tmp_path: Path, strict_server: FhirServer
) -> None:
    one_patient(tmp_path, "opnobody")  # the Patient is not on the server: 400 OperationOutcome
    done = replay_to(tmp_path, strict_server.url, "--delivery-wait", "5")
    assert done.returncode == 1, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("outbox item ")]
    (item,) = items(tmp_path / "state.sqlite")
    assert item.status == "failed"
    diagnostics = " ".join(item.outcome["issue"][0]["details"]["text"].split())
    assert diagnostics == "Invalid reference (Not found)"  # the server's own words
    assert (
        line == f"outbox item {item.id} ({item.rule} raised) failed: POST /fhir/R4: HTTP 400 ({diagnostics})"
    )
    assert "not delivered: HTTP 400 1" in done.stderr
    assert "opnobody" not in done.stderr


# -- item 2: a wrong URL is a configuration error, not a refusal of the alert ------------------
@pytest.mark.parametrize("answer", ["html_404", "json_404"])
def test_a_base_url_that_is_not_a_fhir_server_is_a_configuration_error(
    answer: str, request: pytest.FixtureRequest, tmp_path: Path, strict_server: FhirServer
) -> None:
    wrong = request.getfixturevalue(answer)
    resources = one_patient(tmp_path, f"opwrong{answer[:4]}")
    done = replay_to(tmp_path, wrong, "--delivery-wait", "5")
    assert done.returncode == 1, done.stderr
    kind = "text/html answer" if answer == "html_404" else "on the base URL: Not found"
    expected = f"configuration error: {wrong} does not answer as a FHIR server (HTTP 404"
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("configuration error:")]
    assert line.startswith(expected) and kind in line, line
    (item,) = items(tmp_path / "state.sqlite")
    assert item.status == "pending" and item.attempts == 1  # not failed for good
    status = run(tmp_path, "outbox", "status", "--state", "state.sqlite")
    assert (status.returncode, status.stdout.split()[:4]) == (0, ["pending", "1", "failed", "0"])

    strict_server.load(resources[f"opwrong{answer[:4]}"])  # the Patient, as the EHR holds it
    flush = run(tmp_path, "outbox", "flush", "--state", "state.sqlite", "--fhir-server", strict_server.url)
    assert flush.returncode == 0, flush.stderr
    assert [i.status for i in items(tmp_path / "state.sqlite")] == ["delivered"]
    assert len(strict_server.search(f"Flag?subject=Patient/opwrong{answer[:4]}")) == 1


# -- item 2: list, retry, audit trail, no duplicates ------------------------------------------
def test_a_failed_item_is_listed_retried_with_an_audit_trail_and_delivered_once(
    tmp_path: Path, strict_server: FhirServer
) -> None:
    patient = "opretry"
    resources = one_patient(tmp_path, patient)
    state = tmp_path / "state.sqlite"
    first = replay_to(tmp_path, strict_server.url, "--delivery-wait", "5")
    assert first.returncode == 1, first.stderr
    (item,) = items(state)
    assert item.status == "failed"
    status = run(tmp_path, "outbox", "status", "--state", "state.sqlite")
    assert status.returncode == 1

    listed = run(tmp_path, "outbox", "list", "--state", "state.sqlite", "--failed")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t") == ["item", "rule", "change", "status", "attempts", "last_status", "reason"]
    fields = row.split("\t")
    assert fields[:6] == [str(item.id), item.rule, "raised", "failed", "1", "400"]
    assert patient not in listed.stdout  # the patient only when asked
    shown = run(tmp_path, "outbox", "list", "--state", "state.sqlite", "--show-patient", "--json")
    (doc,) = json.loads(shown.stdout)
    assert (
        doc["patient"] == f"Patient/{patient}" and doc["status"] == "failed" and doc["last_status"] == "400"
    )
    assert doc["reason"] == "POST /fhir/R4: HTTP 400 (Invalid reference (Not found))"
    pending = run(tmp_path, "outbox", "list", "--state", "state.sqlite", "--pending")
    assert pending.stdout.splitlines()[1:] == []

    strict_server.load(resources[patient])  # the operator fixes the cause on the server
    retried = run(tmp_path, "outbox", "retry", str(item.id), "--state", "state.sqlite")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.splitlines() == [f"item {item.id}: failed -> pending (retry by operator)"]
    trail = [(e.item, e.before, e.after, e.actor, e.reason) for e in events(state)]
    assert trail[0][:4] == (item.id, "pending", "failed", "delivery") and "400" in trail[0][4]
    assert trail[1] == (item.id, "failed", "pending", "operator", "retry by operator")
    again = run(tmp_path, "outbox", "retry", str(item.id), "--state", "state.sqlite")
    assert again.returncode == 1 and f"item {item.id} not retried: it is pending" in again.stderr

    flush = run(tmp_path, "outbox", "flush", "--state", "state.sqlite", "--fhir-server", strict_server.url)
    assert flush.returncode == 0, flush.stderr
    replayed = replay_to(tmp_path, strict_server.url)  # the same data again: nothing new to send
    assert replayed.returncode == 0, replayed.stderr
    assert [(i.id, i.status, i.attempts) for i in items(state)] == [(item.id, "delivered", 2)]
    assert len(strict_server.search(f"Flag?subject=Patient/{patient}")) == 1
    status = run(tmp_path, "outbox", "status", "--state", "state.sqlite")
    assert (status.returncode, status.stdout.split()) == (
        0,
        ["pending", "0", "failed", "0", "delivered", "1"],
    )


def test_retry_all_failed_and_its_usage(tmp_path: Path, strict_server: FhirServer) -> None:
    for patient in ("opall0", "opall1"):
        one_patient(tmp_path / patient, patient)
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / patient / "in" / f"{patient}.json").rename(tmp_path / "in" / f"{patient}.json")
    replay_to(tmp_path, strict_server.url, "--delivery-wait", "5")
    failed = [i.id for i in items(tmp_path / "state.sqlite") if i.status == "failed"]
    assert len(failed) == 2
    neither = run(tmp_path, "outbox", "retry", "--state", "state.sqlite")
    assert neither.returncode == 2 and "give the ITEM ids to retry, or --all-failed" in neither.stderr
    both = run(tmp_path, "outbox", "retry", "1", "--all-failed", "--state", "state.sqlite")
    assert both.returncode == 2
    unknown = run(tmp_path, "outbox", "retry", "999", "--state", "state.sqlite")
    assert unknown.returncode == 1 and "item 999 not retried: no such item" in unknown.stderr
    done = run(tmp_path, "outbox", "retry", "--all-failed", "--state", "state.sqlite")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"item {i}: failed -> pending (retry by operator)" for i in failed]
    assert [i.status for i in items(tmp_path / "state.sqlite")] == ["pending", "pending"]
    none_left = run(tmp_path, "outbox", "retry", "--all-failed", "--state", "state.sqlite")
    assert none_left.returncode == 0 and "no failed items" in none_left.stderr


@pytest.fixture(scope="module")
def plain_server() -> Iterator[FhirServer]:
    try:
        with running_fhir_server() as server:
            yield server
    except FhirServerUnavailable as exc:
        pytest.skip(str(exc))


BUSY = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "transient", "diagnostics": "Database is busy, try again"}],
}


@pytest.mark.parametrize(
    ("fault", "reason", "message"),
    [
        (lambda p: p.drip(0.2), "timeout", "POST /fhir/R4: no answer within 0.5 s"),
        (
            lambda p: p.fail(503, outcome=BUSY),
            "HTTP 503",
            "POST /fhir/R4: HTTP 503 (Database is busy, try again)",
        ),
    ],
    ids=["timeout", "503 with OperationOutcome"],
)
def test_a_slow_or_busy_server_is_named_per_item_and_in_the_summary(
    fault, reason: str, message: str, tmp_path: Path, plain_server: FhirServer
) -> None:
    positives(tmp_path / "in", f"opslow{reason[:4]}")
    with fault_proxy(plain_server.url) as proxy:
        for _ in range(3):  # every attempt of the client's own retries
            fault(proxy)
        done = replay_to(tmp_path, proxy.url, "--delivery-wait", "0", "--fhir-timeout", "0.5")
    assert done.returncode == 1, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("outbox item ")]
    assert line == f"outbox item 1 (cauda_equina_syndrome raised) pending: {message}"
    assert done.stderr.splitlines()[-1].endswith(
        f"pending 1, failed 0, delivered 0; not delivered: {reason} 1"
    )


def test_list_leaves_the_patient_out_of_reasons_unless_asked(tmp_path: Path) -> None:
    from redflags.state.model import Evaluated, NewDelivery

    store = SqliteStateStore.open(tmp_path / "state.sqlite")
    try:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
        (item,) = store.commit(
            Evaluated(
                "Patient/oplist9", 0, deliveries=[NewDelivery("Patient/oplist9", "r", "raised", bundle)]
            )
        )
        store.mark_failed(item, "POST /: HTTP 400 (Resource Patient/oplist9 not found)", None, "400")
    finally:
        store.close()
    hidden = run(tmp_path, "outbox", "list", "--state", "state.sqlite")
    assert hidden.returncode == 0 and "oplist9" not in hidden.stdout
    assert hidden.stdout.splitlines()[1].endswith("\t400\tPOST /: HTTP 400 (Resource Patient/… not found)")
    shown = run(tmp_path, "outbox", "list", "--state", "state.sqlite", "--show-patient")
    assert shown.stdout.splitlines()[1].startswith(f"{item}\tPatient/oplist9\tr\traised\tfailed\t1\t400\t")


def test_a_failed_item_with_a_later_change_of_its_alert_is_not_retried(tmp_path: Path) -> None:
    """Sending an old "raised" after its "withdrawn" went out would raise the alert again."""
    from redflags.state.model import Evaluated, NewDelivery

    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    store = SqliteStateStore.open(tmp_path / "state.sqlite")
    try:
        changes = [NewDelivery("Patient/opsup", "r", change, bundle) for change in ("raised", "withdrawn")]
        raised, withdrawn = store.commit(Evaluated("Patient/opsup", 0, deliveries=changes))
        store.mark_failed(raised, "POST /: HTTP 400 (refused)", None)
        store.mark_delivered(withdrawn, 1)
    finally:
        store.close()
    done = run(tmp_path, "outbox", "retry", str(raised), "--state", "state.sqlite")
    assert done.returncode == 1
    assert f"item {raised} not retried: a later change of the same alert was queued after it" in done.stderr
    every = run(tmp_path, "outbox", "retry", "--all-failed", "--state", "state.sqlite")
    assert every.returncode == 0 and "no failed items" in every.stderr
    assert [i.status for i in items(tmp_path / "state.sqlite")] == ["failed", "delivered"]
    assert [e.after for e in events(tmp_path / "state.sqlite") if e.item == raised] == ["failed"]
