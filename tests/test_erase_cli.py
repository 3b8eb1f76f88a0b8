"""``redflags history forget`` as an operator runs it (issue 16, erase), on SQLite and PostgreSQL.

A forget of a patient with an active alert is refused in one line and erases nothing;
``--withdraw`` queues the ledger's own withdrawal (Flag inactive with period.end, CarePlan
revoked) and the forget succeeds once it is delivered; ``--force`` erases at once and says what
it abandoned. Each erasure logs ``state.forget`` with the command's request id, no patient id.
With a real FHIR server (``fhir_server_harness``) the Flag is inactive on the server before the
patient is forgotten.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from redflags.state.model import StateStore
from redflags.state.stores import open_state

from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401 (pytest fixture)
from .pty_helpers import run_on_a_terminal
from .test_store_contract_state import KINDS, location
from .writeback_helpers import NOW, bundle, redflags, v01, write

P, RULE, T = "Patient/er1", "cauda_equina_syndrome", "site-b"


@pytest.fixture(params=KINDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(location(request.param, request, tmp_path))


def raise_alert(tmp_path: Path, state: str, *server: str) -> None:
    """V01 (cauda equina, tier A) for ``P`` in tenant ``T``: one active alert, one item queued
    (delivered when a server is given)."""
    res = v01("er1")
    path = write(tmp_path / "v01.json", bundle(*res.values()))
    run = redflags("replay", str(path), "--now", NOW, "--state", state, "--tenant", T, *server)
    assert run.returncode == 0, run.stderr


def forget(state: str, *more: str) -> subprocess.CompletedProcess:
    return redflags("history", "forget", P, "--state", state, "--tenant", T, *more)


def said(run: subprocess.CompletedProcess) -> list[str]:
    """stderr without the JSON log lines: what the command says to a person."""
    return [line for line in run.stderr.splitlines() if not line.startswith("{")]


def logged(run: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]


def kept(store: StateStore) -> tuple[int, int, int]:
    """History facts, active alerts and outbox items of ``P`` in ``T``."""
    items = [d for d in store.deliveries(tenant=T) if d.patient == P]
    return len(store.history(P, tenant=T)), len(store.active(P, tenant=T)), len(items)


def test_forget_with_an_active_alert_is_refused_in_one_line_and_erases_nothing(
    where: str, tmp_path: Path
) -> None:
    raise_alert(tmp_path, where)
    with open_state(where) as store:
        before = kept(store)
    assert before[1:] == (1, 1)
    refused = forget(where)
    assert refused.returncode == 1 and refused.stdout == ""
    assert said(refused) == [
        f"Error: {P} in tenant {T} has 1 active alerts, 1 pending and 0 failed outbox items: "
        "nothing forgotten; --withdraw queues the withdrawal of its Flags, "
        "--force erases anyway (its Flags stay active on the FHIR server)"
    ]
    with open_state(where) as store:
        assert kept(store) == before


def test_force_erases_says_what_it_abandoned_and_leaves_an_audit_line(where: str, tmp_path: Path) -> None:
    raise_alert(tmp_path, where)
    erased = forget(where, "--force")
    assert erased.returncode == 0, erased.stderr
    (request,) = re.findall(
        rf"^forgot {P} in tenant {T}: \d+ records removed \(request (\w+)\)$", erased.stdout
    )
    assert said(erased) == [
        "erased anyway: 1 active alerts, 1 pending and 0 failed outbox items; "
        "their Flags stay as they are on the FHIR server"
    ]
    with open_state(where) as store:
        assert kept(store) == (0, 0, 0) and store.transitions(P, tenant=T) == []
    (audit,) = [e for e in logged(erased) if e["event"] == "state.forget"]
    assert audit["request_id"] == request and audit["tenant"] == T and audit["forced"] is True
    assert (audit["active_alerts"], audit["undelivered"]) == (1, 1) and audit["records"] > 2
    assert "er1" not in erased.stderr  # no patient id in any log line


def test_withdraw_queues_the_ledgers_withdrawal_and_forgets_once_it_is_delivered(
    where: str, tmp_path: Path
) -> None:
    raise_alert(tmp_path, where)
    queued = forget(where, "--withdraw")
    assert queued.returncode == 1 and queued.stdout == ""
    assert said(queued) == [
        f"Error: queued 1 withdrawals of {P} in tenant {T}'s alerts, nothing forgotten yet: deliver them "
        "(`redflags outbox flush --fhir-server URL`), then run forget again"
    ]
    with open_state(where) as store:
        assert store.active(P, tenant=T) == {}
        raised, withdrawn = store.deliveries(tenant=T)
        assert [t.change for t in store.transitions(P, tenant=T)] == ["raised", "withdrawn"]
    assert (raised.change, withdrawn.change, withdrawn.status, withdrawn.rule) == (
        "raised", "withdrawn", "pending", RULE
    )  # fmt: skip
    flag_was, plan_was = (e["resource"] for e in raised.bundle["entry"][1:])
    flag, plan = (e["resource"] for e in withdrawn.bundle["entry"][1:])
    assert (flag["status"], plan["status"]) == ("inactive", "revoked") and flag["period"]["end"]
    assert flag["identifier"] == flag_was["identifier"] and plan["identifier"] == plan_was["identifier"]
    assert all(e["request"]["method"] == "PUT" for e in withdrawn.bundle["entry"][1:])  # conditional updates

    still = forget(where, "--withdraw")  # nothing active any more, but not delivered yet
    assert still.returncode == 1 and "2 pending" in said(still)[0] and "outbox flush" in said(still)[0]
    with open_state(where) as store:
        for item in (raised, withdrawn):  # what the deliverer does (with a server: see below)
            store.mark_delivered(item.id, 200)
    done = forget(where)
    assert done.returncode == 0 and "records removed" in done.stdout, done.stderr
    with open_state(where) as store:
        assert kept(store) == (0, 0, 0)


def test_on_a_terminal_the_refusal_is_one_line_and_nothing_else(tmp_path: Path) -> None:
    state = str(tmp_path / "state.sqlite")
    raise_alert(tmp_path, state)
    status, stderr = run_on_a_terminal("history", "forget", P, "--state", state, "--tenant", T)
    assert status == 1 and len(stderr.splitlines()) == 1, stderr  # the log line is told, not shown
    assert stderr.startswith(f"Error: {P} in tenant {T} has 1 active alerts")


def test_withdraw_and_force_together_is_a_usage_error(tmp_path: Path) -> None:
    state = str(tmp_path / "state.sqlite")
    raise_alert(tmp_path, state)
    both = forget(state, "--withdraw", "--force")
    assert both.returncode == 2 and "exclude each other" in both.stderr
    with open_state(state) as store:
        assert kept(store)[1:] == (1, 1)


def test_with_a_real_server_the_flag_is_inactive_there_before_the_patient_is_forgotten(
    tmp_path: Path,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    state = str(tmp_path / "state.sqlite")
    raise_alert(tmp_path, state, "--fhir-server", fhir_server.url)
    (flag,) = fhir_server.search(f"Flag?subject={P}")
    assert flag["status"] == "active"
    assert forget(state).returncode == 1  # delivered, but still active on the server
    assert forget(state, "--withdraw").returncode == 1
    flushed = redflags("outbox", "flush", "--state", state, "--fhir-server", fhir_server.url)
    assert flushed.returncode == 0, flushed.stderr
    (flag,) = fhir_server.search(f"Flag?subject={P}")
    (plan,) = fhir_server.search(f"CarePlan?subject={P}")
    assert (flag["status"], plan["status"]) == ("inactive", "revoked") and flag["period"]["end"]
    done = forget(state)
    assert done.returncode == 0, done.stderr
    with open_state(state) as store:
        assert kept(store) == (0, 0, 0)
