"""The rules and the terminology describe the same findings: nothing used lacks a value set,
no value set is dead weight, and every rule of the reference exists with its fixtures."""

from __future__ import annotations

from engine.session import Engine
from fhir_adapters.terminology import Terminology
from redflags.pipeline import Pipeline

from .conftest import FIXTURES
from .reference_rules import REFERENCE_RULES


def rule_keys(engine: Engine) -> set[str]:
    """Finding keys read by some rule (derived facts are the rules' own, not terminology)."""
    return {c.key for s in engine.specs for c in s.conds if c.kind != "derived" and c.key}


def test_every_finding_key_a_rule_reads_has_a_value_set(pipeline: Pipeline) -> None:
    term: Terminology = pipeline.term
    missing = sorted(rule_keys(pipeline.engine) - set(term.keys))
    assert missing == []


def test_every_value_set_is_read_by_some_rule(pipeline: Pipeline) -> None:
    unused = sorted(set(pipeline.term.keys) - rule_keys(pipeline.engine))
    assert unused == []


def test_all_twelve_rules_are_loaded(pipeline: Pipeline) -> None:
    assert set(pipeline.engine.metas) == set(REFERENCE_RULES)


def test_every_rule_has_positive_and_near_miss_fixtures() -> None:
    for rule in REFERENCE_RULES:
        names = [p.name for p in (FIXTURES / rule).glob("*.expected.json")]
        assert any(n.startswith("tier") for n in names), rule
        assert any(n.startswith("nearmiss") for n in names), rule
