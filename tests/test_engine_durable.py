"""Work-arounds for durable-rules defects found while adding the laboratory rules.

Each case crashed the process (or matched wrongly) before the work-around, so each runs in its
own interpreter (``isolated``): a crash fails the test instead of the whole suite.
"""

from __future__ import annotations

import json
import textwrap

from engine.dsl import m, present, ref, result

from .engine_helpers import isolated

JOIN_PRELUDE = """
from engine.dsl import latest, m, ref, result
def tiers(pid, k, creatinine, interp=None):
    return [a.tier for a in engine.evaluate(pid, facts(pid, k, creatinine, interp), NOW).alerts]
def facts(pid, k, creatinine, interp=None):
    out = [value(pid, "potassium", k, f"Observation/{pid[8:]}-k"),
           value(pid, "creatinine", creatinine, f"Observation/{pid[8:]}-c", hours_ago=2)]
    if interp:
        out[1]["interp"] = interp
    return out
"""


class TestSessions:
    def test_a_patient_whose_facts_no_rule_reads_is_evaluated(self) -> None:
        # durable-rules aborted ("free(): invalid pointer") deleting such a session.
        out = isolated("""
            engine = Engine(MODULES)
            alone = [{"t": "patient", "pid": "Patient/1", "ref": "Patient/1", "birth": "1970-01-01"}]
            print(engine.evaluate("Patient/1", alone, NOW).alerts)
            both = ces_back("Patient/2") + ces_saddle("Patient/2")
            print(engine.evaluate("Patient/2", both, NOW).alerts[0].rule)
            print(engine.evaluate("Patient/3", [], NOW).facts)
        """)
        assert out.split("\n")[:3] == ["[]", "cauda_equina_syndrome", "0"]


class TestJoins:
    def test_a_join_whose_last_test_fails_neither_crashes_nor_matches(self) -> None:
        # durable-rules read past the join's test sequence when its last test failed (SIGSEGV).
        out = isolated(
            JOIN_PRELUDE
            + textwrap.dedent("""
            def define(r, _p):
                r.fire("A", latest("potassium"), result("creatinine").where(
                    m.v <= ref("potassium").v, "not above the potassium"))
            engine = Engine([module(define)])
            print(tiers("Patient/1", 3.0, 4.0))
            print(tiers("Patient/2", 3.0, 2.0))
        """)
        )
        assert out.split("\n")[:2] == ["[]", "['A']"]

    def test_join_tests_after_an_or_group_are_evaluated(self) -> None:
        # durable-rules stopped at the end of an "|" group: the join test after it was skipped.
        out = isolated(
            JOIN_PRELUDE
            + textwrap.dedent("""
            def define(r, _p):
                r.fire("A", latest("potassium"), result("creatinine").where(
                    ((m.interp == "H") | (m.interp == "HH")) & (m.v > ref("potassium").v * 1000),
                    "flagged high and 1000 times the potassium"))
            engine = Engine([module(define)])
            print(tiers("Patient/1", 3.0, 4.0, "H"))
            print(tiers("Patient/2", 0.001, 4.0, "H"))
            print(tiers("Patient/3", 0.001, 4.0, "L"))
        """)
        )
        assert out.split("\n")[:3] == ["[]", "['A']", "[]"]


def _pattern(cond, prior=()) -> tuple[list, tuple]:
    expr, checks = cond.compile(list(prior))
    return expr.define()["$and"], checks


class TestPatternShape:
    def test_cross_fact_tests_never_reach_durable(self) -> None:
        cond = result("creatinine").where((m.ts < ref(0).ts) & ((m.v > 1) & (m.v < ref(0).v)), "joined")
        parts, checks = _pattern(cond, ["f0"])
        assert not any("$and" in part for part in parts)  # nested "and" groups are flattened
        assert not any('"f0"' in json.dumps(part) for part in parts)
        assert len(parts) == 2 + 1 and len(checks) == 2  # kind, key, v > 1; two Python checks

    def test_or_groups_go_last(self) -> None:
        cond = present("myalgia").where((m.side == "left") | (m.side == "right"), "one side")
        parts, checks = _pattern(cond.where(m.age <= 10, "recent"))
        assert "$or" in parts[-1] and parts[-2] == {"$lte": {"age": 10}} and checks == ()

    def test_an_or_group_that_joins_is_checked_in_python(self) -> None:
        cond = result("ck").where((m.v > ref(0).v) | (m.v < 1), "either")
        parts, checks = _pattern(cond, ["f0"])
        assert len(parts) == 2 and len(checks) == 1
        assert checks[0].holds([{"v": 2}, {"v": 0.5}], 1) and not checks[0].holds([{"v": 2}, {"v": 1.5}], 1)
