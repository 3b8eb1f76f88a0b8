"""A CDS call's first evaluation encodes no resource again: the record carries each one's JSON text.

``pack`` (HTTP process) sends each resource's own text, ``unpack`` (engine process) hands it on
with the decoded resource, and the facts cache keys on that text instead of ``orjson.dumps`` of
the resource. Equal texts decode to equal resources, so a hit is never stale; the facts are the
ones mapped without a cache. Dates are parsed once per string, errors still name each path.
"""

from __future__ import annotations

import copy
import random

import orjson
import pytest

from engine import describe
from fhir_adapters import facts_cache, terminology, times
from fhir_adapters.errors import IntakeError
from fhir_adapters.facts import patient_facts
from fhir_adapters.facts_cache import FactsCache
from fhir_adapters.intake import group
from fhir_adapters.terminology import Terminology
from redflags.service.cds.answer import pack, unpack
from rulesets import VALUESET_DIR

from .conftest import fixture_patients


@pytest.fixture(scope="module")
def term() -> Terminology:
    return terminology.load(VALUESET_DIR)


def _valued(found: list[tuple[str, dict, str | None]]) -> int:
    return sum(r.get("resourceType") == "Observation" and "valueQuantity" in r for _, r, _ in found)


def _found() -> list[tuple[str, dict, str | None]]:
    """The resources of the fixture patient with the most measured Observations, as a prefetch is read."""
    best: list[tuple[str, dict, str | None]] = []
    for patient in fixture_patients():
        found = [(e.path, e.resource, e.full_url) for e in patient.entries]
        best = found if _valued(found) > _valued(best) else best
    return best


def test_the_record_carries_each_resources_own_json_text() -> None:
    found = [
        (
            "Bundle.entry[0].resource",
            {"resourceType": "Patient", "id": "p1", "name": [{"text": "Zoë ✓"}]},
            None,
        ),
        (
            "Bundle.entry[1].resource",
            {"resourceType": "Observation", "note": [{"text": "a\n[b],c"}]},
            "urn:x",
        ),
        ("Bundle.entry[2].resource", {"resourceType": "Procedure", "x": [[[{}]]], "n": 1.5e300}, None),
    ]
    unpacked = unpack(pack(found))
    assert [(p, r, u) for p, r, u, _ in unpacked] == found
    for (_, resource, _, text), (_, sent, _) in zip(unpacked, found, strict=True):
        assert text == orjson.dumps(sent) and orjson.loads(text) == resource


def test_an_empty_record_unpacks_to_nothing() -> None:
    assert unpack(pack([])) == []


def test_a_first_evaluation_encodes_no_resource_for_its_key(
    term: Terminology, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = _found()
    (pid,) = group("t", found).patients
    plain = patient_facts(group("t", found).patients[pid], term)
    record = unpack(pack(found))
    monkeypatch.setattr(facts_cache, "orjson", _NoDumps())
    cache = FactsCache()
    for _ in range(2):  # cold, then warm
        got = patient_facts(group("t", record).patients[pid], term, cache)
        assert (got.facts, got.issues) == (plain.facts, plain.issues)
    kept = sum(r.get("resourceType") in ("Observation", "Procedure") for _, r, _ in found)
    assert cache.misses == kept and cache.hits == kept > 3


class _NoDumps:
    """``orjson`` for the facts cache with ``dumps`` refused: a key must come from the record."""

    def dumps(self, _value: object) -> bytes:
        raise AssertionError("the facts cache encoded a resource again")


def test_a_changed_resource_in_the_record_is_mapped_afresh(term: Terminology) -> None:
    found = _found()
    changed = copy.deepcopy(found)
    for _, resource, _ in changed:  # every measured value (some codes map to no finding)
        if resource.get("resourceType") == "Observation" and "valueQuantity" in resource:
            resource["valueQuantity"]["value"] = float(resource["valueQuantity"]["value"]) + 1.5
    (pid,) = group("t", found).patients
    cache = FactsCache()
    patient_facts(group("t", unpack(pack(found))).patients[pid], term, cache)
    again = patient_facts(group("t", unpack(pack(changed))).patients[pid], term, cache)
    assert again.facts == patient_facts(group("t", changed).patients[pid], term).facts
    assert again.facts != patient_facts(group("t", found).patients[pid], term).facts
    kept = sum(r.get("resourceType") in ("Observation", "Procedure") for _, r, _ in found)
    assert cache.misses == kept + _valued(found) and cache.hits == kept - _valued(found)


@pytest.mark.parametrize("text", ["2024-02-30", "2024-01-01T10:00", "yesterday", "0001-01-01"])
def test_a_bad_date_parsed_again_names_its_own_path(text: str) -> None:
    for path in ("Bundle.entry[0].resource.issued", "Bundle.entry[9].resource.effectiveDateTime"):
        with pytest.raises(IntakeError) as raised:
            times.to_epoch(text, path)
        assert raised.value.path == path


def test_a_date_parsed_again_gives_the_same_instant() -> None:
    times.forget()
    first = times.to_epoch("2025-03-10T12:00:00+01:00", "a")
    assert times.to_epoch("2025-03-10T12:00:00+01:00", "b") == first == 1741604400
    assert times.to_epoch("2025-03", "c") == 1740787200


def _split_walked(text: str) -> list[str]:
    """``engine.describe._split`` as it was: every character walked."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth <= 0 and text.startswith("; ", i):
            parts.append(text[start:i])
            start = i + 2
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def test_a_rationale_is_cut_into_criteria_as_before() -> None:
    rng = random.Random(15)
    texts = ["", " ", "a", "a; b", "a (b; c); d", ";", "; ", "a;b", ")); a; (b"]
    texts += ["".join(rng.choice("ab ();;") for _ in range(rng.randrange(12))) for _ in range(3000)]
    for text in texts:
        assert describe._split(text) == _split_walked(text), repr(text)
