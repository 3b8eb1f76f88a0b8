"""The engine runs durable-rules the safe way: isolated sessions, loud failures, flat memory."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from engine.dsl import DAY
from engine.errors import CrossTalkError, RuleDefinitionError
from engine.host import background_threads, engine_thread
from engine.session import Engine
from rulesets import MODULES

from .conftest import slow_n
from .engine_helpers import NOW, ces_back, ces_saddle, isolated, value


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(MODULES)


class TestIsolation:
    # These two ids collide in durable-rules' 32-bit session hash (docs/engine.md#hash-collisions).
    A, B = "Patient/208789", "Patient/1021284"

    def test_colliding_patient_ids_never_share_facts(self, engine: Engine) -> None:
        # Either half alone is no cauda equina alert; joined they would be tier A.
        first = engine.evaluate(self.A, ces_saddle(self.A), NOW)
        second = engine.evaluate(self.B, ces_back(self.B), NOW)
        assert first.alerts == [] and second.alerts == []
        both = engine.evaluate(self.A, ces_saddle(self.A) + ces_back(self.A), NOW)
        assert [(a.rule, a.severity) for a in both.alerts] == [("cauda_equina_syndrome", "critical")]
        assert set(both.alerts[0].evidence) == {"Observation/208789-saddle", "Condition/208789-back"}

    def test_interleaved_evaluations_of_colliding_ids_stay_separate(self, engine: Engine) -> None:
        for _ in range(50):
            assert engine.evaluate(self.B, ces_back(self.B), NOW).alerts == []
            assert engine.evaluate(self.A, ces_saddle(self.A), NOW).alerts == []

    def test_fact_of_another_patient_is_refused(self, engine: Engine) -> None:
        with pytest.raises(CrossTalkError):
            engine.evaluate(self.A, ces_saddle(self.A) + ces_back(self.B), NOW)

    def test_concurrent_callers_are_serialised_on_one_engine_thread(self, engine: Engine) -> None:
        def one(i: int) -> tuple[int, list[str]]:
            pid = f"Patient/c{i}"
            facts = ces_saddle(pid) + (ces_back(pid) if i % 2 else [])
            return i, [a.rule for a in engine.evaluate(pid, facts, NOW).alerts]

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, range(400)))
        for i, rules in results:
            assert rules == (["cauda_equina_syndrome"] if i % 2 else [])

    def test_durable_timer_threads_never_start(self, engine: Engine) -> None:
        engine.evaluate(self.A, ces_saddle(self.A), NOW)
        assert background_threads() == []
        names = [t.name for t in threading.enumerate()]
        assert sum(name.startswith("redflags-engine") for name in names) == 1


class TestFailuresAreLoud:
    def test_first_session_of_a_process_without_any_match_is_freed_safely(self) -> None:
        # durable-rules aborted (free(): invalid pointer) deleting such a session before every
        # session opened with a fact of its own rule (engine.session.SESSION).
        out = isolated("""
            engine = Engine(MODULES)
            nobody = [{"t": "patient", "pid": "Patient/n", "ref": "Patient/n", "birth": "1980-01-01"}]
            first = engine.evaluate("Patient/n", nobody, NOW)
            print(first.alerts, engine.evaluate("Patient/e", [], NOW).facts)
            saddle = ces_saddle("Patient/s") + ces_back("Patient/s")
            print([a.rule for a in engine.evaluate("Patient/s", saddle, NOW).alerts])
        """)
        assert out.split("\n")[:2] == ["[] 0", "['cauda_equina_syndrome']"]

    def test_exception_in_a_rule_action_fails_the_evaluation(self) -> None:
        out = isolated("""
            def define(r, _p):
                r.derive("boom", present("back_pain"), value=lambda f: 1 / 0)
                r.fire("A", present("back_pain"))
            broken = Engine([module(define)])
            try:
                broken.evaluate("Patient/1", ces_back("Patient/1"), NOW)
            except RuleActionError as exc:
                print("raised", type(exc.__cause__).__name__)
            # the failed session was freed: the next evaluation works
            print("next", broken.evaluate("Patient/2", ces_saddle("Patient/2"), NOW).alerts)
        """)
        assert out.split("\n")[:2] == ["raised ZeroDivisionError", "next []"]

    def test_first_evaluation_of_a_process_may_match_nothing(self) -> None:
        # durable-rules aborted the process (munmap_chunk) when the first session it deleted had
        # run no action; the engine's warm-up session at registration prevents it.
        out = isolated("""
            engine = Engine(MODULES)
            alone = [{"t": "patient", "pid": "Patient/1", "ref": "Patient/1"}]
            print(engine.evaluate("Patient/1", alone, NOW).alerts)
            both = ces_saddle("Patient/2") + ces_back("Patient/2")
            print(len(engine.evaluate("Patient/2", both, NOW).alerts))
        """)
        assert out.split("\n")[:2] == ["[]", "1"]

    def test_unknown_parameter_and_tier_are_refused(self) -> None:
        with pytest.raises(RuleDefinitionError, match="no_such"):
            Engine(MODULES, params={"cauda_equina_syndrome": {"no_such": 1}})
        out = isolated("""
            def define(r, _p):
                r.fire("Z", present("back_pain"))
            try:
                Engine([module(define)])
            except ValueError as exc:
                print(exc)
        """)
        assert "unknown tier" in out

    def test_a_configuration_compiles_once_per_process(self, engine: Engine) -> None:
        # another configuration compiles its own ruleset (tests/test_multiconf_engine.py)
        assert Engine(MODULES)._shared is engine._shared  # same configuration: shared


class TestParametersAndTime:
    def facts(self, pid: str, pvr: float) -> list[dict]:
        return [*ces_back(pid), value(pid, "pvr_volume", pvr, "Observation/pvr")]

    def test_site_override_moves_a_threshold(self, engine: Engine) -> None:
        assert [a.rule for a in engine.evaluate("Patient/p", self.facts("Patient/p", 350), NOW).alerts] == [
            "cauda_equina_syndrome"
        ]
        out = isolated("""
            from engine.dsl import DAY
            site = Engine(MODULES, params={"cauda_equina_syndrome": {"pvr_ml": 400}})
            facts = [*ces_back("Patient/p"), value("Patient/p", "pvr_volume", 350, "Observation/pvr")]
            print(len(site.evaluate("Patient/p", facts, NOW).alerts))
        """)
        assert out.strip() == "0"

    def test_now_is_a_parameter_not_the_clock(self, engine: Engine) -> None:
        facts = ces_saddle("Patient/t") + ces_back("Patient/t")
        assert engine.evaluate("Patient/t", facts, NOW).alerts
        # Twenty days later the saddle record lies outside the 14-day window.
        assert engine.evaluate("Patient/t", facts, NOW + 20 * DAY).alerts == []

    def test_future_records_are_ignored(self, engine: Engine) -> None:
        future = [dict(f, ts=NOW + 3600, onset=NOW + 3600) for f in ces_saddle("Patient/f")]
        result = engine.evaluate("Patient/f", future + ces_back("Patient/f"), NOW)
        assert result.alerts == [] and result.future == 1


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    import resource

    return pages * resource.getpagesize() // 1024


@pytest.mark.slow
def test_hundred_thousand_patients_in_flat_memory(engine: Engine) -> None:
    """Each evaluation frees its session: memory after 100,000 patients ~ memory after 10,000.

    Slow: ``pytest -m slow``; REDFLAGS_SLOW_N sets the 100,000 (CI runs 20,000)."""
    total = slow_n()

    def batch(start: int, count: int) -> list[tuple[str, list[dict]]]:
        out = []
        for i in range(start, start + count):
            pid = f"Patient/m{i}"
            facts = ces_back(pid) + (ces_saddle(pid) if i % 10 == 0 else [])
            out.append((pid, facts))
        return out

    fired = 0
    for start in range(0, 10_000, 1_000):
        fired += sum(len(e.alerts) for e in engine.evaluate_many(batch(start, 1_000), NOW))
    after_10k = _rss_kib()
    for start in range(10_000, total, 1_000):
        count = min(1_000, total - start)
        fired += sum(len(e.alerts) for e in engine.evaluate_many(batch(start, count), NOW))
    after_all = _rss_kib()
    assert fired == len(range(0, total, 10))  # every tenth patient is positive, none lost
    assert after_all - after_10k < 8 * 1024, (after_10k, after_all)
    assert engine_thread().ident != threading.get_ident()


class TestStratifiedScoresNotesAndDisorders:
    def test_score_counts_each_item_once_whatever_the_order_and_notes_follow_the_tier(self) -> None:
        out = isolated("""
            from engine.dsl import fact
            def define(r, _p):
                r.score_item("pts", 1, present("back_pain"), label="back")
                r.score_item("pts", 1, present("sciatica"), label="back")  # same item: once
                r.score_item("pts", 2, present("saddle_anesthesia"), label="saddle")
                r.score_item("pts", -2, present("fever"), label="other")
                r.score("pts", "points {v:g}")
                r.fire("A", fact("pts") >= 3, disorder=Code(SNOMED, "2", "y"))
                r.note("A", present("fever"), text="fever: {facts}")
            e = Engine([module(define)])
            from engine_helpers import finding
            def run(pid, keys, reverse=False):
                facts = [finding(pid, k, f"Observation/{k}") for k in keys]
                res = e.evaluate(pid, facts[::-1] if reverse else facts, NOW)
                return [(a.tier, a.disorder.code, a.notes, a.rationale) for a in res.alerts]
            print(run("Patient/1", ["back_pain", "sciatica", "saddle_anesthesia"]))
            print(run("Patient/2", ["back_pain", "sciatica", "saddle_anesthesia"], reverse=True))
            print(run("Patient/3", ["back_pain", "saddle_anesthesia", "fever"]))
            print(run("Patient/4", ["back_pain", "sciatica"]))
        """)
        first, second, third, fourth = out.strip().split("\n")
        assert first == second  # order of facts does not matter
        assert first.startswith("[('A', '2', (), ") and "points 3 (" in first
        assert "back +1" in first and "saddle +2" in first
        assert third == "[]"  # 1 + 2 - 2 = 1
        assert fourth == "[]"  # one item, counted once

    def test_note_only_for_its_tier(self) -> None:
        out = isolated("""
            def define(r, _p):
                r.fire("A", present("back_pain"))
                r.note("A", present("fever"), text="with {facts}")
            e = Engine([module(define)])
            from engine_helpers import finding
            facts = [finding("Patient/1", k, f"Observation/{k}") for k in ("back_pain", "fever")]
            print(e.evaluate("Patient/1", facts, NOW).alerts[0].notes)
        """)
        assert out.strip().startswith("('with fever on ")


class TestCrossFactTests:
    """durable-rules segfaults when a cross-fact join test fails; such tests run in Python."""

    def test_thousands_of_failing_and_passing_joins_neither_crash_nor_miss(self) -> None:
        out = isolated("""
            from engine.dsl import m, ref
            def define(r, _p):
                r.fire("A", present("back_pain"),
                       present("fever").where(m.onset >= ref("back_pain").onset, "after it"))
            e = Engine([module(define)])
            from engine_helpers import finding
            fired = 0
            for i in range(3000):
                pid = f"Patient/{i}"
                back = dict(finding(pid, "back_pain", "Observation/b"), onset=NOW - 100 + i % 3)
                fever = dict(finding(pid, "fever", "Observation/f"), onset=NOW - 200 + (i % 5) * 50)
                fired += len(e.evaluate(pid, [back, fever], NOW).alerts)
            print(fired)
        """)
        # fever after back pain: i % 5 in (3, 4) always, i % 5 == 2 only when i % 3 == 0
        assert out.strip() == str(3000 * 2 // 5 + 3000 // 15)

    def test_python_side_semantics_match_durable(self) -> None:
        from engine.expr import m, ref

        facts = [{"onset": 10, "v": 4.0}, {"onset": 12, "v": 2.0, "site": "hip"}]
        later = m.onset > ref(["f0"], 0).onset
        assert later.refs() == {0} and later.holds(facts, 1) and not later.holds(facts, 0)
        fell = m.v <= ref(["f0"], 0).v * 0.5
        assert fell.holds(facts, 1)
        # a missing property never satisfies a comparison, in either direction
        assert not (m.site == ref(["f0"], 0).site).holds(facts, 1)
        assert not (m.site != "hip").holds(facts, 0) and not (m.site == "hip").holds(facts, 0)
        assert m.site.missing().holds(facts, 0) and m.site.exists().holds(facts, 1)
        assert not (m.v / ref(["f0"], 0).missing > 1).holds(facts, 1)
        assert ((m.v > 3) | (m.onset == 12)).holds(facts, 1) and not ((m.v > 3) & (m.onset == 12)).holds(
            facts, 1
        )
        assert not (m.site == 1).holds(facts, 1)  # mixed types never compare as strings

    def test_a_test_written_with_durables_own_m_is_refused(self) -> None:
        out = isolated("""
            from durable.lang import m as durable_m
            def define(r, _p):
                r.fire("A", present("back_pain").where(durable_m.v > 1, "v > 1"))
            try:
                Engine([module(define)])
            except TypeError as exc:
                print(exc)
        """)
        assert "write tests with m and ref from engine.dsl" in out


def test_older_results_only_asserted_where_some_condition_reads_them(engine: Engine) -> None:
    """latest() matches the newest result only: older ones of such keys are never asserted."""
    assert "creatinine" in engine._history_keys  # the AKI rise compares two results
    assert "heart_rate" not in engine._history_keys  # read as latest only
    pid = "Patient/hist"
    series = [value(pid, key, v, f"Observation/{key}{i}", hours_ago=1 + i) for key, v in
              (("creatinine", 90), ("heart_rate", 80)) for i in range(3)]  # fmt: skip
    asserted = engine.evaluate(pid, series, NOW).facts
    assert asserted == 3 + 1  # three creatinine results, the newest heart rate only
