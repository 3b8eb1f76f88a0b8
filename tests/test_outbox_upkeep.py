"""Issue 10, suspected outbox defects: what a deliverer reads, when it stops, what it deletes.

- A pass reads one bundle at a time (it claims ids in a bounded batch), never every pending
  bundle: measured by recording what the store hands out, not by timing.
- ``drain`` stops when nothing can be sent within its patience, even when later changes of a
  patient wait behind an item whose retry lies beyond it (it used to spin until that retry).
- Delivered items, and shown CDS cards with their feedback, are deleted after a keep period.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_adapters.fhir_client import FhirClient, RetryPolicy
from redflags.delivery.sender import deliver_due, drain
from redflags.service.cds import feedback as service_feedback
from redflags.service.settings import ServiceSettings
from redflags.state.feedback import Feedback, ShownCard, SqliteFeedbackStore
from redflags.state.model import ActiveAlert, Delivery, Evaluated, NewDelivery
from redflags.state.sqlite_store import SqliteStateStore

from .writeback_helpers import NOW, bundle, entered_in_error, positives, redflags, v01, write

DAY = 86_400


@pytest.fixture
def dead_url() -> str:
    """A FHIR base nobody listens on: every send is a connection refused (transient)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/fhir/R4"


@pytest.fixture
def client(dead_url: str) -> Iterator[FhirClient]:
    with FhirClient(dead_url, retry=RetryPolicy(attempts=1), timeout_s=2) as opened:
        yield opened


class Recording:
    """The store, recording how many outbox bundles each call hands out."""

    def __init__(self, store: SqliteStateStore) -> None:
        self.store = store
        self.loaded: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            items = [result] if isinstance(result, Delivery) else result if isinstance(result, list) else []
            count = sum(isinstance(r, Delivery) for r in items)
            if count:
                self.loaded.append((name, count))
            return result

        return call


def _replay(folder: Path, state: Path, now: str = NOW) -> None:
    run = redflags("replay", str(folder), "--now", now, "--state", str(state))
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state file with 30 pending items (30 patients)."""
    folder = tmp_path_factory.mktemp("many")
    positives(folder / "in", "m", 30)
    _replay(folder / "in", folder / "state.sqlite")
    return folder / "state.sqlite"


def _copy(state: Path, tmp_path: Path) -> SqliteStateStore:
    copy = tmp_path / "state.sqlite"
    copy.write_bytes(state.read_bytes())
    return SqliteStateStore.open(copy)


@pytest.mark.parametrize(
    "deliver",
    [
        lambda store, client: drain(store, client, patience_s=0),
        lambda store, client: deliver_due(store, client, int(time.time())),
        lambda store, client: deliver_due(store, client, int(time.time()), lease=120),
    ],
    ids=["drain", "pass", "leased pass"],
)
def test_a_pass_reads_one_bundle_at_a_time(
    deliver: Callable[[Any, FhirClient], Any], many: Path, tmp_path: Path, client: FhirClient
) -> None:
    store = _copy(many, tmp_path)
    try:
        recording = Recording(store)
        done = deliver(recording, client)
        assert done.retried == 30  # every item was tried once (server down) ...
        assert max(n for _, n in recording.loaded) == 1  # ... holding one bundle at a time
        assert sum(n for _, n in recording.loaded) == 30  # ... each read once
        assert all(d.attempts == 1 for d in store.deliveries("pending"))
    finally:
        store.close()


def test_drain_does_not_wait_for_items_queued_behind_a_later_retry(
    tmp_path: Path, client: FhirClient
) -> None:
    state = tmp_path / "state.sqlite"
    res = v01("q1")
    _replay(write(tmp_path / "raise.json", bundle(*res.values())), state)
    wrong = [entered_in_error(r) for r in res.values() if r["resourceType"] == "Observation"]
    _replay(write(tmp_path / "withdraw.json", bundle(*wrong)), state, "2025-03-10T13:00:00Z")
    store = SqliteStateStore.open(state)
    try:
        raised, withdrawn = store.deliveries("pending")
        assert (raised.change, withdrawn.change) == ("raised", "withdrawn")
        now = time.time()
        store.mark_retry(raised.id, int(now) + 3600, "HTTP 503")  # the server asked for an hour
        clock = [now]
        naps: list[float] = []

        def sleep(seconds: float) -> None:
            naps.append(seconds)
            if len(naps) > 100:
                raise AssertionError("drain keeps waiting for what it cannot send")
            clock[0] += seconds

        done = drain(store, client, patience_s=30, clock=lambda: clock[0], sleep=sleep)
        assert (done.delivered, done.failed, done.retried) == (0, 0, 0)
        assert naps == []  # nothing can go within 30 s: it returns at once
        assert [d.attempts for d in store.deliveries("pending")] == [1, 0]
    finally:
        store.close()


def test_delivered_items_are_deleted_after_the_keep_period(many: Path, tmp_path: Path, dead_url: str) -> None:
    store = _copy(many, tmp_path)
    try:
        old, recent, failed, *_ = store.deliveries("pending")
        now = int(time.time())
        store.mark_delivered(old.id, now - 31 * DAY)
        store.mark_delivered(recent.id, now - 29 * DAY)
        store.mark_failed(failed.id, "HTTP 400", None)
    finally:
        store.close()
    run = redflags("outbox", "flush", "--state", str(tmp_path / "state.sqlite"), "--fhir-server", dead_url,
                   "--delivery-wait", "0")  # fmt: skip
    assert run.returncode == 1  # the server is down: 27 items stay pending
    store = SqliteStateStore.open(tmp_path / "state.sqlite")
    try:
        kept = {d.id: d.status for d in store.deliveries()}
    finally:
        store.close()
    assert old.id not in kept  # delivered 31 days ago: deleted
    assert kept[recent.id] == "delivered" and kept[failed.id] == "failed"  # kept for the operator
    assert list(kept.values()).count("pending") == 27


def test_shown_cards_and_their_feedback_are_deleted_after_the_keep_period(tmp_path: Path) -> None:
    settings = ServiceSettings(feedback_db=str(tmp_path / "feedback.sqlite"), feedback_keep_days=180)
    store = service_feedback.open_store(settings)
    try:
        t0 = 1_750_000_000
        store.record_cards("svc", [ShownCard("old", "rule_a", "A", "critical")], t0)
        store.record_cards("svc", [ShownCard("kept", "rule_a", "A", "critical")], t0 + 100 * DAY)
        said = [Feedback("old", "overridden", "2025-06-15T12:00:00Z"), Feedback("kept", "accepted", "x")]
        store.record_feedback("svc", said, "client", t0 + 100 * DAY)
        store.record_feedback("svc", [Feedback("never-shown", "accepted", "x")], "client", t0 + 10 * DAY)
        before = store.report()
        assert before.rules[0].shown == 2 and before.unknown_cards.feedback_items == 1

        store.record_cards("svc", [ShownCard("new", "rule_b", "B", "warning")], t0 + 200 * DAY)
        after = store.report()
    finally:
        store.close()
    by_rule = {r.rule: r for r in after.rules}
    assert by_rule["rule_a"].shown == 1 and by_rule["rule_a"].accepted == 1  # "old" and its override gone
    assert by_rule["rule_a"].overridden == 0 and by_rule["rule_b"].shown == 1
    assert after.unknown_cards.feedback_items == 0  # the old orphan feedback went too


def test_feedback_purge_keeps_the_window(tmp_path: Path) -> None:
    store = SqliteFeedbackStore.open(tmp_path / "f.sqlite")
    try:
        store.record_cards("svc", [ShownCard(f"c{i}", "r", "A", "info") for i in range(5)], 1_000 * DAY)
        assert store.purge(1_000 * DAY) == 0  # shown exactly at the cut: kept
        assert store.purge(1_000 * DAY + 1) == 5
        assert store.report().rules == ()
    finally:
        store.close()


def test_a_stopping_worker_ends_its_pass_after_the_item_in_flight(
    many: Path, tmp_path: Path, client: FhirClient
) -> None:
    """Shutdown waits for one send, not for a pass of up to 100 (each up to its timeouts)."""
    store = _copy(many, tmp_path)
    try:
        stop = threading.Event()
        recording = Recording(store)
        original = recording.__getattr__("delivery")

        def delivery(item: int) -> Delivery | None:
            stop.set()  # the service is told to stop while the first item is being sent
            return original(item)

        recording.delivery = delivery  # type: ignore[method-assign]
        done = deliver_due(recording, client, int(time.time()), lease=120, stop=stop)
        assert (done.delivered, done.failed, done.retried) == (0, 0, 1)
        assert sorted(d.attempts for d in store.deliveries("pending")) == [0] * 29 + [1]
    finally:
        store.close()


def test_the_ledger_takes_the_delivered_resources_only_if_it_still_holds_what_was_sent(
    tmp_path: Path,
) -> None:
    flag = {"resourceType": "Flag", "status": "active"}
    sent = {"resourceType": "CarePlan", "supportingInfo": [{"reference": "Observation/x"}]}
    kept = {"resourceType": "CarePlan", "supportingInfo": [{"display": "Observation/x"}]}
    patient = "Patient/l1"
    alert = ActiveAlert(patient, "rule_a", "A", "critical", flag, sent, 0, ("Observation/x",))
    store = SqliteStateStore.open(tmp_path / "s.sqlite")
    try:
        (item,) = store.commit(
            Evaluated(
                patient,
                0,
                active={"rule_a": alert},
                deliveries=[NewDelivery(patient, "rule_a", "raised", {})],
            )
        )
        before, after = {"Flag": flag, "CarePlan": sent}, {"Flag": flag, "CarePlan": kept}
        assert store.revise_active(item, before, after)
        assert store.active(patient)["rule_a"].careplan == kept
        assert not store.revise_active(item, before, {"Flag": flag, "CarePlan": {"resourceType": "CarePlan"}})
        assert store.active(patient)["rule_a"].careplan == kept  # a newer ledger entry is left alone
        assert store.revise(item, {"resourceType": "Bundle"}, {"resourceType": "OperationOutcome"})
        store.mark_delivered(item, 1)
        assert not store.revise(item, {}, {})  # only a pending item changes
        assert store.delivery(item).bundle == {"resourceType": "Bundle"}  # type: ignore[union-attr]
    finally:
        store.close()
