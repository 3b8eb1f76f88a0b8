"""``StateStore.forget`` does not silently abandon alerts (issue 16, erase), on SQLite and PostgreSQL.

Forgetting a patient with an active alert left its Flag active on the FHIR server with nothing
left to withdraw it, and erased undelivered outbox items (an alert nobody would ever see)
without a word. Now it is refused, in the erasing transaction, unless forced; and each erasure
leaves the audit line ``state.forget`` (counts and the run's id, never the patient id).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import structlog

from redflags import logs
from redflags.state.model import Evaluated, ForgetRefused, StateStore, Transition, Unfinished
from redflags.state.stores import open_state

from .test_state_store import alert, delivery
from .test_store_contract_state import KINDS, location

P = "Patient/erase-me-7"
T = "site-b"


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s = open_state(location(request.param, request, tmp_path))
    yield s
    s.close()


def raised(store: StateStore, *, active: bool = True, items: int = 1) -> list[int]:
    """One evaluation of ``P`` in ``T``: a fact, the alert (when ``active``) and ``items`` items."""
    return store.commit(
        Evaluated(
            P,
            100,
            facts={"Condition/1": [{"f": 1, "ts": 100}]},
            active={"r": alert(P, "r")} if active else {},
            transitions=[Transition(P, "r", "raised", "urgent", 100, "test", tenant=T)],
            deliveries=[delivery(P, f"r{n}") for n in range(items)],  # n: not superseded
            tenant=T,
        )
    )


def kept(store: StateStore) -> tuple[int, int, int, int]:
    """Facts, active alerts, transitions and outbox items of ``P`` in ``T``."""
    return (
        len(store.history(P, tenant=T)),
        len(store.active(P, tenant=T)),
        len(store.transitions(P, tenant=T)),
        len([d for d in store.deliveries(tenant=T) if d.patient == P]),
    )


def test_forget_is_refused_while_an_alert_is_active_and_erases_nothing(store: StateStore) -> None:
    raised(store, items=2)
    with pytest.raises(ForgetRefused) as refused:
        store.forget(P, tenant=T)
    assert refused.value.left == Unfinished(active=1, pending=2, failed=0)
    assert kept(store) == (1, 1, 1, 2)


def test_undelivered_items_alone_refuse_it_pending_or_failed(store: StateStore) -> None:
    first, second = raised(store, active=False, items=2)
    store.mark_failed(first, "400", None)
    with pytest.raises(ForgetRefused) as refused:
        store.forget(P, tenant=T)
    assert refused.value.left == Unfinished(active=0, pending=1, failed=1)
    store.mark_delivered(second, 200)
    store.retry_failed([first], 200)
    store.mark_delivered(first, 201)
    assert store.forget(P, tenant=T) == 1 + 1 + 2  # fact, transition, two delivered items
    assert kept(store) == (0, 0, 0, 0)


def test_force_erases_everything_of_that_tenant_only(store: StateStore) -> None:
    raised(store)
    store.commit(Evaluated(P, 100, active={"r": alert(P, "r")}))  # the same id, default tenant
    assert store.forget(P, tenant=T, force=True) == 1 + 1 + 1 + 1
    assert kept(store) == (0, 0, 0, 0)
    assert list(store.active(P)) == ["r"]


def test_a_patient_nothing_is_outstanding_for_is_forgotten_without_force(store: StateStore) -> None:
    (item,) = raised(store, active=False)
    store.mark_delivered(item, 200)
    assert store.forget(P, tenant=T) == 3
    assert store.forget(P, tenant=T) == 0  # nobody: nothing to refuse either


def test_each_erasure_leaves_an_audit_line_with_counts_and_no_patient_id(store: StateStore) -> None:
    raised(store, items=2)
    stream = io.StringIO()
    logs.configure("warning", stream, console=False)
    structlog.contextvars.bind_contextvars(request_id="erasure-1")
    try:
        with pytest.raises(ForgetRefused):
            store.forget(P, tenant=T)
        store.forget(P, tenant=T, force=True)
    finally:
        structlog.contextvars.clear_contextvars()
    text = stream.getvalue()
    assert "erase-me-7" not in text and "Patient/" not in text
    refused, erased = (orjson.loads(line) for line in text.splitlines())
    assert refused["event"] == "state.forget_refused" and refused["active_alerts"] == 1
    assert {k: erased[k] for k in ("event", "tenant", "records", "active_alerts", "undelivered")} == {
        "event": "state.forget",
        "tenant": T,
        "records": 1 + 1 + 1 + 2,
        "active_alerts": 1,
        "undelivered": 2,
    }
    assert erased["forced"] is True and erased["request_id"] == "erasure-1"
    assert erased["level"] == "warning"  # written at the CLI's default level
