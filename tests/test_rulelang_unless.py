"""``unless(...)``: negation decided after the positive facts' fixed point, whatever their order.

durable-rules' own ``none()`` depends on the order facts arrive; ``unless`` is compiled onto the
engine's second stratum (engine.dsl ``Unless``), so a negating fact asserted last, or derived by
a chain of rules, still negates. Each scenario is evaluated with its facts in every order.
"""

from __future__ import annotations

import orjson
import pytest

from engine.dsl import Rules, fact, m, present, ref, unless
from engine.errors import RuleDefinitionError

from .engine_helpers import finding, isolated

PID = "Patient/u"

RULES = """
from engine.dsl import fact, m, medication, present, unless
import itertools, json
def define(r, _p):
    # a derived negating fact: "weak" comes from a chain, "explained" from another rule
    r.derive("weak", present("leg_weakness"))
    r.derive("explained", present("sciatica"))
    r.derive("explained", fact("deep").where(m.v >= 0, "dated"))
    r.derive("deep", present("back_pain"), value=lambda f: 1)
    r.fire("A", fact("weak"), unless(fact("explained"), present("bells_palsy"), text="nothing explains it"))
engine = Engine([module(define)])
def run(facts):
    out = set()
    for order in itertools.permutations(facts):
        alerts = engine.evaluate("Patient/u", list(order), NOW).alerts
        out.add(json.dumps([(a.tier, a.rationale) for a in alerts]))
    return sorted(out)
"""


def _facts(*keys: str) -> list[dict]:
    return [finding(PID, key, f"Observation/{key}") for key in keys]


def test_negation_holds_in_every_order_of_the_facts() -> None:
    cases = {
        "alone": _facts("leg_weakness"),
        "explained": _facts("leg_weakness", "sciatica"),
        "explained_by_a_chain": _facts("back_pain", "leg_weakness"),
        "second_alternative": _facts("bells_palsy", "leg_weakness", "fever"),
        "irrelevant": _facts("leg_weakness", "fever", "diplopia"),
    }
    out = isolated(RULES + f"print(json.dumps({{k: run(v) for k, v in {cases!r}.items()}}))")
    got = orjson.loads(out)
    rationale = "Test rule, tier A (critical, t): leg weakness on 2025-03-09 12:00; nothing explains it"
    fired = [[["A", f"{rationale} (no item recorded)."]]]
    assert {k: [orjson.loads(v) for v in vs] for k, vs in got.items()} == {
        "alone": fired,
        "explained": [[]],
        "explained_by_a_chain": [[]],
        "second_alternative": [[]],
        "irrelevant": fired,
    }


def test_a_tuple_is_one_alternative_matched_together() -> None:
    """unless((a, b)): no a with a b joined to it (hypokalemia: no albumin paired with the calcium)."""
    out = isolated("""
        from engine.dsl import latest, m, ref, unless
        def define(r, _p):
            calcium = latest("calcium_total")
            albumin = latest("albumin").where(m.ts >= ref("calcium_total").ts - 3600, "within 1 h before")
            r.fire("A", calcium, unless((calcium, albumin), text="no albumin paired"))
        engine = Engine([module(define)])
        for hours in (0.5, 3):  # albumin taken 0.5 h, then 3 h, before the calcium
            facts = [value("Patient/t", "calcium_total", 2.0, "Observation/ca", hours_ago=1),
                     value("Patient/t", "albumin", 30, "Observation/alb", hours_ago=1 + hours)]
            print([a.tier for a in engine.evaluate("Patient/t", facts, NOW).alerts])
    """)
    assert out.split("\n")[:2] == ["[]", "['A']"]


def test_an_unless_may_not_read_the_rule_s_other_conditions() -> None:
    r = Rules("t")
    with pytest.raises(RuleDefinitionError, match=r"ref\('leg_weakness'\) names no earlier condition"):
        r.fire(
            "A",
            present("leg_weakness"),
            unless(present("sciatica").where(m.side == ref("leg_weakness").side, "on that side")),
        )


def test_one_unless_used_twice_is_counted_once() -> None:
    r = Rules("t")
    none = unless(present("sciatica"), present("back_pain"))
    r.fire("A", fact("weak"), none)
    r.fire("A", fact("other"), none)
    assert [s.does for s in r.specs] == ["derive", "derive", "score", "fire", "fire"]
    assert r.specs[3].conds[1].key == r.specs[4].conds[1].key == "t.unless.0"
    assert r.specs[3].conds[1].phrase == "no sciatica present or back pain present"


def test_unless_needs_a_condition() -> None:
    with pytest.raises(TypeError, match="at least one condition"):
        unless()
