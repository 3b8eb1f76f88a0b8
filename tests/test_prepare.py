"""engine.prepare: series fields of results (latest, prev_age) and treatment censoring."""

from __future__ import annotations

from engine.dsl import DAY
from engine.prepare import prepare

from .engine_helpers import NOW, value

CENSOR = {"b12_total": "b12_replacement"}


def _result(key: str, v: float, days_ago: float, ref: str) -> dict:
    return value("Patient/p", key, v, ref, hours_ago=days_ago * 24, unit="pg/mL")


def _medication(key: str, days_ago: float | None, active: int = 1) -> dict:
    fact = {"t": "medication", "pid": "Patient/p", "ref": "MedicationRequest/m", "key": key, "active": active}
    if days_ago is not None:
        fact["ts"] = int(NOW - days_ago * DAY)
    return fact


def _by_ref(facts: list[dict]) -> dict[str, dict]:
    return {str(f["ref"]): f for f in facts if f["t"] == "value"}


class TestSeries:
    def test_latest_and_previous_result_age(self) -> None:
        facts = [
            _result("fvc", 3000, 5, "O/a"),
            _result("fvc", 2500, 1, "O/c"),
            _result("fvc", 4000, 3, "O/b"),
            _result("mep", 50, 2, "O/other"),
        ]
        got = _by_ref(prepare(facts, NOW).facts)
        assert [got[r]["latest"] for r in ("O/a", "O/b", "O/c")] == [0, 0, 1]
        assert got["O/a"]["prev_age"] == NOW  # no previous result: as if at the epoch
        assert got["O/b"]["prev_age"] == 5 * DAY and got["O/c"]["prev_age"] == 3 * DAY
        assert got["O/other"]["latest"] == 1 and got["O/other"]["prev_age"] == NOW  # its own series

    def test_equal_times_are_decided_by_the_later_issued_in_either_order(self) -> None:
        """14.2: several results for one key, the latest by effective time; a tie -> latest issued."""
        early = _result("fvc", 3000, 1, "O/x") | {"issued": NOW - 3000}
        late = _result("fvc", 2000, 1, "O/y") | {"issued": NOW - 2000}
        older = _result("fvc", 3500, 2, "O/old")
        for facts in ([older, early, late], [late, early, older], [early, older, late]):
            got = _by_ref(prepare([dict(f) for f in facts], NOW).facts)
            assert (got["O/x"]["latest"], got["O/y"]["latest"], got["O/old"]["latest"]) == (0, 1, 0)
            # both were taken after the older one: each is "the first since" it
            assert got["O/x"]["prev_age"] == got["O/y"]["prev_age"] == 2 * DAY

    def test_a_tie_nothing_orders_leaves_every_tied_result_current(self) -> None:
        """Same time and no (or the same) issued: the sender's entry order decides nothing."""
        for issued in ({}, {"issued": NOW - 60}):
            one, two = (_result("fvc", v, 1, f"O/{v}") | issued for v in (3000, 2000))
            for facts in ([one, two], [two, one]):
                got = _by_ref(prepare([dict(f) for f in facts], NOW).facts)
                assert (got["O/3000"]["latest"], got["O/2000"]["latest"]) == (1, 1)
                assert got["O/3000"]["prev_age"] == got["O/2000"]["prev_age"] == NOW


class TestCensoring:
    def test_results_after_the_treatment_began_are_dropped_and_latest_falls_back(self) -> None:
        facts = [
            _result("b12_total", 120, 60, "O/before"),
            _medication("b12_replacement", 50, active=0),  # completed: it still began then
            _medication("b12_replacement", 10),
            _result("b12_total", 640, 9, "O/after"),
        ]
        prepared = prepare(facts, NOW, CENSOR)
        got = _by_ref(prepared.facts)
        assert list(got) == ["O/before"] and got["O/before"]["latest"] == 1
        assert [f["ref"] for f in prepared.censored] == ["O/after"]

    def test_without_a_dated_treatment_nothing_is_dropped(self) -> None:
        facts = [_result("b12_total", 120, 60, "O/a"), _medication("b12_replacement", None)]
        assert list(_by_ref(prepare(facts, NOW, CENSOR).facts)) == ["O/a"]
        dated = [_result("b12_total", 120, 60, "O/a"), _medication("b12_replacement", 5)]
        assert list(_by_ref(prepare(dated, NOW).facts)) == ["O/a"]  # no censor declared

    def test_only_the_declared_key_and_medication_censor(self) -> None:
        facts = [
            _result("b12_total", 150, 1, "O/b12"),
            _result("mma", 0.6, 1, "O/mma"),
            _medication("anticoagulant_active", 30),
        ]
        assert sorted(_by_ref(prepare(facts, NOW, CENSOR).facts)) == ["O/b12", "O/mma"]
        facts.append(_medication("b12_replacement", 30))
        assert sorted(_by_ref(prepare(facts, NOW, CENSOR).facts)) == ["O/mma"]

    def test_a_sample_taken_at_the_start_of_treatment_still_counts(self) -> None:
        facts = [_result("b12_total", 150, 2, "O/same"), _medication("b12_replacement", 2)]
        assert list(_by_ref(prepare(facts, NOW, CENSOR).facts)) == ["O/same"]
