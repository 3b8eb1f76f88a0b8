"""Derived facts checked when the engine is built: a ``fact("k")`` that no rule derives is an
error naming the rule and the key (a misspelt key used to be a rule that silently never fired),
and so is a score or ``unless`` whose items read a total (summed once, after the items)."""

from __future__ import annotations

import types

import pytest

from engine.dsl import Rules, check_program, fact, present, unless
from engine.errors import RuleDefinitionError
from engine.session import Engine
from engine.vocabulary import Code, RuleMeta, Tier
from rulesets import MODULES

META = RuleMeta(
    id="typo_rule",
    version="0.1",
    title="Typo rule",
    tiers=(Tier("A", "critical", "t"),),
    source_label="t",
    source_url="https://redflags.dev/t",
    disorder=Code("http://snomed.info/sct", "1", "x"),
    actions=(),
)


def _module(define: object) -> types.ModuleType:
    module = types.ModuleType("rulesets.typo_rule")
    module.META, module.PARAMS, module.define = META, {}, define  # type: ignore[attr-defined]  # a test module
    return module


def test_a_fact_no_rule_derives_stops_the_engine_naming_rule_and_key() -> None:
    def define(r: Rules, _p: dict) -> None:
        r.fire("A", fact("any_leg_weaknes"), present("fever"))  # one letter short

    # raised before anything reaches durable-rules: safe in this process
    with pytest.raises(
        RuleDefinitionError, match=r"typo_rule\.fire\.A\.0: fact\('any_leg_weaknes'\) is derived by no rule"
    ):
        Engine([*MODULES, _module(define)])


def test_a_derived_key_of_a_shared_module_is_known() -> None:
    r = Rules("typo_rule")
    r.fire("A", fact("any_leg_weakness"))
    common = Rules("common")
    common.derive("any_leg_weakness", present("leg_weakness"))
    check_program([*common.specs, *r.specs])


def test_the_shipped_rules_pass() -> None:
    specs = []
    for module in MODULES:
        r = Rules(module.__name__.rsplit(".", 1)[-1])
        module.define(r, dict(module.PARAMS))
        specs += r.specs
    check_program(specs)


def test_an_unless_over_a_score_total_is_refused() -> None:
    r = Rules("t")
    r.score_item("wells", 1, present("fever"), label="fever")
    r.score("wells", "Wells {v:g}")
    r.fire("A", present("leg_weakness"), unless(fact("wells") >= 2))
    with pytest.raises(RuleDefinitionError, match=r"t\.unless\.0: an item reads the total 'wells'"):
        check_program(r.specs)


def test_a_score_item_reading_a_total_through_a_chain_is_refused() -> None:
    r = Rules("t")
    r.score_item("a", 1, present("fever"), label="fever")
    r.score("a", "{v:g}")
    r.derive("high_a", fact("a") >= 1)
    r.score_item("b", 1, fact("high_a"), label="high a")
    r.score("b", "{v:g}")
    with pytest.raises(RuleDefinitionError, match="b: an item reads the total 'a'"):
        check_program(r.specs)
