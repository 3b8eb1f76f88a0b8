"""The ledger race of ``serve --workers > 1``: two evaluations of one patient at the same time.

Each evaluation below has its own connection to one real SQLite file, as two engine processes
have. A store wrapper holds each one at its first commit until both have read the patient
(a barrier, bounded), so the interleaving that loses an update is forced, not hoped for. On
30fb331 both commits went through: the alert was raised twice, and a withdrawn alert was written
back as active. Now the later commit is refused and that evaluation done again on what the
first one stored.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import PatientResult, Pipeline
from redflags.state.model import Evaluated
from redflags.state.sqlite_store import SqliteStateStore
from redflags.stateful import Memory

from .conftest import FIXTURES

HISTORY = FIXTURES / "history"
PATIENT = "Patient/v03"
GBS = "guillain_barre_syndrome"
WAIT_S = 60


class HeldStore:
    """A store whose first ``commit`` runs ``before`` first (waiting for the other evaluation)."""

    def __init__(self, store: SqliteStateStore, before: Callable[[], None], after: Callable[[], None]):
        self._store, self._before, self._after = store, before, after
        self.commits = 0

    def commit(self, evaluated: Evaluated) -> list[int]:
        self.commits += 1
        if self.commits == 1:
            self._before()
        try:
            return self._store.commit(evaluated)
        finally:
            if self.commits == 1:
                self._after()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def run_both(
    pipeline: Pipeline, path: Path, first: Path, second: Path, now: str
) -> tuple[list[PatientResult], list[PatientResult]]:
    """Evaluate ``first`` and ``second`` at once; ``first`` commits first, ``second`` after it."""
    both_read = threading.Barrier(2, timeout=WAIT_S)
    first_done = threading.Event()
    results: dict[str, list[PatientResult]] = {}
    errors: list[BaseException] = []

    def second_waits() -> None:
        both_read.wait()
        assert first_done.wait(WAIT_S), "the first evaluation never committed"

    def work(name: str, source: Path, store: HeldStore) -> None:
        try:
            tracker = Pipeline(memory=Memory(store, actor=name))  # type: ignore[arg-type]
            results[name] = list(tracker.evaluate(read_path(source), parse_now(now)))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            both_read.abort()
        finally:
            store._store.close()

    stores = {
        "first": HeldStore(SqliteStateStore.open(path), both_read.wait, first_done.set),
        "second": HeldStore(SqliteStateStore.open(path), second_waits, lambda: None),
    }
    threads = [
        threading.Thread(target=work, args=(name, source, stores[name]))
        for name, source in (("first", first), ("second", second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 2)
        assert not thread.is_alive(), "an evaluation hung"
    assert not errors, errors
    assert stores["first"].commits == 1 and stores["second"].commits >= 1, "both must have committed"
    return results["first"], results["second"]


def prepared(tmp_path: Path, pipeline: Pipeline, *names: str) -> Path:
    path = tmp_path / "state.sqlite"
    with SqliteStateStore.open(path) as store:
        tracker = Pipeline(memory=Memory(store, actor="setup"))
        for name, now in names:
            list(tracker.evaluate(read_path(HISTORY / name), parse_now(now)))
    return path


def test_two_evaluations_at_once_raise_one_alert_once(tmp_path: Path, pipeline: Pipeline) -> None:
    path = prepared(tmp_path, pipeline, ("gbs-monday.json", "2025-03-10T12:00:00Z"))
    wednesday = HISTORY / "gbs-wednesday.json"
    first, second = run_both(pipeline, path, wednesday, wednesday, "2025-03-12T12:00:00Z")
    assert [a.rule for a in first[0].alerts] == [a.rule for a in second[0].alerts] == [GBS]
    with SqliteStateStore.open(path) as store:
        assert [t.change for t in store.transitions(PATIENT)] == ["raised"]  # 30fb331: raised, raised
        assert len(store.deliveries("pending")) == 1
        assert list(store.active(PATIENT)) == [GBS]


def test_a_withdrawal_is_not_undone_by_an_evaluation_that_read_before_it(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    path = prepared(
        tmp_path,
        pipeline,
        ("gbs-monday.json", "2025-03-10T12:00:00Z"),
        ("gbs-wednesday.json", "2025-03-12T12:00:00Z"),
    )
    resolved = tmp_path / "resolved.json"  # the weakness resolved: the alert is withdrawn
    monday = (HISTORY / "gbs-monday.json").read_text()
    resolved.write_text(monday.replace('"code": "active"', '"code": "resolved"'))
    other = tmp_path / "heart-rate.json"  # an unrelated new result, sent at the same moment
    bundle = json.loads((HISTORY / "gbs-wednesday.json").read_text())
    (entry,) = [e for e in bundle["entry"] if e["resource"]["id"] == "v03-hr"]
    entry["resource"]["id"] = "v03-hr-2"
    entry["fullUrl"] = entry["fullUrl"].replace("v03-hr", "v03-hr-2")
    other.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [entry]}))

    first, second = run_both(pipeline, path, resolved, other, "2025-03-12T13:00:00Z")
    assert [t.change for t in first[0].transitions] == ["withdrawn"]
    assert second[0].alerts == []  # evaluated again, on the withdrawal's history
    with SqliteStateStore.open(path) as store:
        assert store.active(PATIENT) == {}  # 30fb331: the alert active again in the ledger
        assert [t.change for t in store.transitions(PATIENT)] == ["raised", "withdrawn"]
        assert "Observation/v03-hr-2" in store.facts_by_resource(PATIENT)  # its data is kept
