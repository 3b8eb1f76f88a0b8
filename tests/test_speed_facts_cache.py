"""A repeated call maps only the resources that changed (fhir_adapters/facts_cache.py), same facts.

The service's engine processes keep the facts of mapped Observations and Procedures, found by
patient, reference, path and the resource's JSON compared in full; a replay keeps none.
"""

from __future__ import annotations

import copy

import pytest

from fhir_adapters import terminology
from fhir_adapters.facts import patient_facts
from fhir_adapters.facts_cache import FactsCache
from fhir_adapters.intake import PatientGroup, read_path
from fhir_adapters.terminology import Terminology
from redflags.pipeline import Pipeline
from rulesets import VALUESET_DIR

from .conftest import FIXTURES, fixture_patients

NOW = 1741608000  # 2025-03-10T12:00:00Z, the fixtures' evaluation time


@pytest.fixture(scope="module")
def term() -> Terminology:
    return terminology.load(VALUESET_DIR)


def _groups() -> list[PatientGroup]:
    """Every fixture patient with more than one resource, as read from its file."""
    return [g for g in fixture_patients() if len(g.entries) > 1]


GROUPS = _groups()


def _potassium(group: PatientGroup) -> PatientGroup:
    """The group with one Observation's value changed (or the group itself when it has none)."""
    changed = copy.deepcopy(group)
    for entry in changed.entries:
        value = entry.resource.get("valueQuantity")
        if (
            entry.resource.get("resourceType") == "Observation"
            and isinstance(value, dict)
            and "value" in value
        ):
            value["value"] = float(value["value"]) + 1.5
            return changed
    return changed


def test_the_fixtures_give_groups_to_map() -> None:
    assert len(GROUPS) > 100


def test_cached_facts_and_issues_equal_uncached_ones_cold_and_warm(term: Terminology) -> None:
    cache = FactsCache()
    for group in GROUPS:
        plain = patient_facts(group, term)
        for _ in range(2):  # the first call fills the cache, the second reads it
            cached = patient_facts(group, term, cache)
            assert (cached.facts, cached.issues) == (plain.facts, plain.issues), group.pid
    assert cache.hits > 0 and cache.misses > 0


def test_a_repeated_group_maps_only_the_resource_that_changed(term: Terminology) -> None:
    group = max(GROUPS, key=lambda g: sum(e.resource.get("resourceType") == "Observation" for e in g.entries))
    cached_types = sum(e.resource.get("resourceType") in ("Observation", "Procedure") for e in group.entries)
    cache = FactsCache()
    patient_facts(group, term, cache)
    assert (cache.misses, cache.hits) == (cached_types, 0)
    patient_facts(group, term, cache)
    assert (cache.misses, cache.hits) == (cached_types, cached_types)
    changed = _potassium(group)
    facts = patient_facts(changed, term, cache)
    assert (cache.misses, cache.hits) == (cached_types + 1, 2 * cached_types - 1)
    assert facts.facts == patient_facts(changed, term).facts  # the new value, not the kept one


def test_a_caller_changing_the_facts_it_got_changes_no_later_call(term: Terminology) -> None:
    group = GROUPS[0]
    cache = FactsCache()
    first = patient_facts(group, term, cache)
    for fact in first.facts:
        fact["key"] = "changed"
    assert patient_facts(group, term, cache).facts == patient_facts(group, term).facts


def test_the_cache_keeps_at_most_its_size(term: Terminology) -> None:
    cache = FactsCache(size=5)
    for group in GROUPS[:20]:
        patient_facts(group, term, cache)
    assert len(cache) == 5


def test_a_pipeline_with_the_cache_alerts_as_one_without(term: Terminology) -> None:
    plain, cached = Pipeline(), Pipeline(facts_cache=FactsCache())
    for path in sorted(FIXTURES.glob("*/*.json"))[:80]:
        if path.name.endswith(".expected.json"):
            continue
        try:
            intake = read_path(path)
        except Exception:
            continue
        want = [(r.pid, r.alerts, r.issues) for r in plain.evaluate(intake, NOW)]
        for _ in range(2):
            assert [(r.pid, r.alerts, r.issues) for r in cached.evaluate(intake, NOW)] == want, path.name
