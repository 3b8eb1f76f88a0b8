"""Evaluation with memory (a ``Pipeline`` with a ``redflags.stateful.Memory``), in-process, real SQLite."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.state.model import PatientBusy, StaleRead, StoreUnavailable
from redflags.state.sqlite_store import SqliteStateStore
from redflags.stateful import Memory, default_retention

from .conftest import FIXTURES

HISTORY = FIXTURES / "history"
GBS = "guillain_barre_syndrome"


@pytest.fixture
def tracker(tmp_path: Path) -> Pipeline:
    return Pipeline(memory=Memory(SqliteStateStore.open(tmp_path / "state.sqlite"), actor="test"))


def deliver(tracker: Pipeline, name: str, now: str):
    (tracked,) = tracker.evaluate(read_path(HISTORY / name), parse_now(now))
    return tracked


def test_an_ascending_pattern_is_seen_across_three_deliveries(tracker: Pipeline) -> None:
    assert deliver(tracker, "gbs-monday.json", "2025-03-10T12:00:00Z").alerts == []
    wednesday = deliver(tracker, "gbs-wednesday.json", "2025-03-12T12:00:00Z")
    (alert,) = wednesday.alerts
    assert alert.rule == GBS and [t.change for t in wednesday.transitions] == ["raised"]
    assert not any("ascending" in note for note in alert.notes)
    assert wednesday.remembered > 0  # Monday's facts took part

    thursday = deliver(tracker, "gbs-thursday-arms.json", "2025-03-13T12:00:00Z")
    (alert,) = thursday.alerts
    assert any("weakness ascending" in note and "Arm weakness" in note for note in alert.notes)
    assert [t.change for t in thursday.transitions] == ["updated"]  # the same Flag, not a new alert


def test_a_resource_sent_again_replaces_its_earlier_facts(tracker: Pipeline, tmp_path: Path) -> None:
    deliver(tracker, "gbs-monday.json", "2025-03-10T12:00:00Z")
    assert deliver(tracker, "gbs-wednesday.json", "2025-03-12T12:00:00Z").alerts
    weakness = (HISTORY / "gbs-monday.json").read_text().replace('"code": "active"', '"code": "resolved"')
    (tmp_path / "resolved.json").write_text(weakness)
    (tracked,) = tracker.evaluate(read_path(tmp_path / "resolved.json"), parse_now("2025-03-12T13:00:00Z"))
    assert tracked.alerts == []
    assert [t.change for t in tracked.transitions] == ["withdrawn"]


def test_a_what_if_reads_history_and_commits_nothing(tracker: Pipeline) -> None:
    deliver(tracker, "gbs-monday.json", "2025-03-10T12:00:00Z")
    intake = read_path(HISTORY / "gbs-wednesday.json")
    (tracked,) = tracker.evaluate(intake, parse_now("2025-03-12T12:00:00Z"), commit=False)
    assert tracked.alerts and tracked.transitions == []
    assert tracker.store.active("Patient/v03") == {} and tracker.store.counts()["pending"] == 0
    assert deliver(tracker, "gbs-thursday-arms.json", "2025-03-13T12:00:00Z").alerts == []


def test_default_retention_is_the_longest_rule_window_plus_a_margin(pipeline: Pipeline) -> None:
    assert default_retention(pipeline.engine.longest_window) == pipeline.engine.longest_window + 30 * 86_400
    assert pipeline.engine.longest_window >= 365 * 86_400  # e.g. cancer within 2 years (4.3)


def test_a_record_sent_again_unchanged_writes_nothing(tracker: Pipeline, tmp_path: Path) -> None:
    """A chart opened again costs no write (no fsync): the same facts are already stored."""

    def last_fact_id() -> int:
        with sqlite3.connect(tmp_path / "state.sqlite") as db:
            return db.execute("SELECT max(id) FROM fact").fetchone()[0]

    deliver(tracker, "gbs-monday.json", "2025-03-10T12:00:00Z")
    deliver(tracker, "gbs-wednesday.json", "2025-03-12T12:00:00Z")
    before = last_fact_id()
    again = deliver(tracker, "gbs-wednesday.json", "2025-03-12T12:05:00Z")
    assert again.alerts and again.transitions == [] and again.deliveries == []
    assert last_fact_id() == before  # nothing rewritten
    changed = (HISTORY / "gbs-wednesday.json").read_text().replace('"value": 1.2', '"value": 1.1')
    (tmp_path / "changed.json").write_text(changed)
    tracker.evaluate(read_path(tmp_path / "changed.json"), parse_now("2025-03-12T12:10:00Z"))
    assert last_fact_id() > before  # a changed FVC is stored


class _AlwaysChanged(SqliteStateStore):
    """Every commit finds the patient changed meanwhile (another host keeps winning)."""

    def commit(self, evaluated):  # type: ignore[no-untyped-def]
        raise StaleRead("changed meanwhile")


def test_a_patient_changed_by_others_at_every_attempt_is_busy_not_a_fault(tmp_path: Path) -> None:
    """Contention is transient: PatientBusy is a StoreUnavailable, which the service answers 503."""
    store = _AlwaysChanged.open(tmp_path / "state.sqlite")
    tracker = Pipeline(memory=Memory(store, actor="test"))
    with pytest.raises(PatientBusy, match="other evaluations"):
        deliver(tracker, "gbs-wednesday.json", "2025-03-12T12:00:00Z")
    assert issubclass(PatientBusy, StoreUnavailable)
