"""Facts say how long a finding holds (``span``), not which FHIR resource it came from.

A Condition is a state (it holds from onset until it ends); an Observation is an event (true
at its time). Facts stored before ``span`` existed named their resource type (``src``):
``fhir_adapters.facts.upgraded`` reads them in today's shape, so a store written by an earlier
version evaluates as before and a record sent again unchanged still writes nothing.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.prepare import prepare
from fhir_adapters.facts import upgraded
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.state.sqlite_store import SqliteStateStore
from redflags.stateful import Memory

from .conftest import FIXTURES

HISTORY = FIXTURES / "history"
NOW = 1_741_608_000
WEEK = 7 * 86_400


def _finding(**extra: object) -> dict[str, object]:
    return {"t": "finding", "pid": "p", "ref": "r", "key": "k", "state": "present", "ts": NOW - WEEK, **extra}


def test_the_engine_reads_span_not_the_resource_type() -> None:
    state, event, old = prepare(
        [
            _finding(span="state", active=1),
            _finding(span="event", active=1),
            _finding(src="Condition", active=1),
        ],
        NOW,
    ).facts
    assert state["age"] == 0  # a current state holds now, whenever it was recorded
    assert event["age"] == old["age"] == WEEK  # the engine no longer knows what "Condition" means


def test_a_stored_fact_is_upgraded_in_place_and_a_new_one_is_left_alone() -> None:
    stored = {"t": "finding", "key": "k", "src": "Condition", "active": 1}
    value = {"t": "value", "key": "k", "v": 1.0}
    new = _finding(span="event")
    (condition, observation, kept_value, kept_new) = upgraded(
        [stored, {**stored, "src": "Observation"}, value, new]
    )
    assert list(condition.items()) == [("t", "finding"), ("key", "k"), ("span", "state"), ("active", 1)]
    assert observation["span"] == "event" and "src" not in observation
    assert kept_value is value and kept_new is new


def _downgrade(store: Path) -> int:
    """Rewrite the stored facts as a version before ``span`` wrote them; how many changed."""
    with sqlite3.connect(store) as db:
        before = db.total_changes
        for span, src in (("state", "Condition"), ("event", "Observation")):
            db.execute(
                "UPDATE fact SET body = CAST(replace(CAST(body AS TEXT), ?, ?) AS BLOB)",
                (f'"span":"{span}"', f'"src":"{src}"'),
            )
        return db.total_changes - before


def _last_fact_id(store: Path) -> int:
    with sqlite3.connect(store) as db:
        return db.execute("SELECT max(id) FROM fact").fetchone()[0]


def test_a_store_written_before_span_evaluates_as_before(tmp_path: Path) -> None:
    def run(store: Path, downgrade: bool) -> list[tuple[str, str, tuple[str, ...]]]:
        pipeline = Pipeline(memory=Memory(SqliteStateStore.open(store), actor="test"))
        pipeline.evaluate(read_path(HISTORY / "gbs-monday.json"), parse_now("2025-03-10T12:00:00Z"))
        if downgrade:
            assert _downgrade(store) > 0
            before = _last_fact_id(store)
            (again,) = pipeline.evaluate(
                read_path(HISTORY / "gbs-monday.json"), parse_now("2025-03-10T12:05:00Z")
            )
            assert again.remembered == 0 and _last_fact_id(store) == before  # unchanged: no write
        (result,) = pipeline.evaluate(
            read_path(HISTORY / "gbs-wednesday.json"), parse_now("2025-03-12T12:00:00Z")
        )
        assert result.remembered > 0
        return [(a.rule, a.tier, a.evidence) for a in result.alerts]

    today = run(tmp_path / "today.sqlite", downgrade=False)
    assert today and run(tmp_path / "old.sqlite", downgrade=True) == today
