"""Conditions dated only through the Encounter they reference (docs/clinical-policy.md#encounter-dates: onset
= the Encounter's period.start, evidence = its period.end), as Bulk Data exports such as MIMIC-IV on
FHIR carry encounter diagnoses: the Encounter of the same input reaches the Condition's mapping,
by ``Encounter/<id>``, by an absolute URL or by ``urn:uuid``; it makes no facts, no patient and
no "not read" report of its own (issue 11)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_adapters.intake import Intake, read_json, read_ndjson
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.state.sqlite_store import SqliteStateStore
from redflags.stateful import Memory

from .codes_helpers import (
    CES,
    NOW,
    at,
    bundle,
    diagnosis,
    encounter,
    ndjson,
    patient,
)


def ces_facts(pipeline: Pipeline, intake: Intake) -> list[tuple[object, object]]:
    (mapped,) = pipeline.facts(intake)
    return [(f.get("onset"), f.get("ts")) for f in mapped.facts if f.get("key") == "ces_dx"]


def ces_tier(pipeline: Pipeline, intake: Intake) -> str | None:
    (result,) = pipeline.evaluate(intake, parse_now(NOW))
    assert [i for i in result.issues if i.severity == "error"] == []
    found = [a.tier for a in result.alerts if a.rule == CES]
    return found[0] if found else None


READERS = [
    pytest.param(lambda *r: read_json(bundle(*r), "in.json"), id="bundle"),
    pytest.param(lambda *r: read_ndjson(ndjson(*r), "in.ndjson"), id="ndjson"),
    pytest.param(lambda *r: read_ndjson(ndjson(*reversed(r)), "in.ndjson"), id="ndjson-encounter-last"),
]


@pytest.mark.parametrize("read", READERS)
def test_an_undated_diagnosis_is_dated_by_its_encounter_and_fires(pipeline: Pipeline, read) -> None:
    intake = read(patient(), encounter(72, 48), diagnosis())
    assert ces_facts(pipeline, intake) == [(parse_now(at(72)), parse_now(at(48)))]
    assert ces_tier(pipeline, intake) == "A"  # new(ces_dx, 14 d): began 3 days ago


@pytest.mark.parametrize("read", READERS)
def test_a_diagnosis_of_an_encounter_a_month_ago_is_not_new(pipeline: Pipeline, read) -> None:
    intake = read(patient(), encounter(24 * 30, 24 * 28), diagnosis())
    assert ces_facts(pipeline, intake) == [(parse_now(at(24 * 30)), parse_now(at(24 * 28)))]
    assert ces_tier(pipeline, intake) is None


def test_an_open_encounter_dates_both_onset_and_evidence_by_its_start(pipeline: Pipeline) -> None:
    intake = read_json(bundle(patient(), encounter(50, None), diagnosis()), "in.json")
    assert ces_facts(pipeline, intake) == [(parse_now(at(50)), parse_now(at(50)))]


def test_the_encounter_found_by_urn_uuid_in_a_transaction(pipeline: Pipeline) -> None:
    enc, cond, pat = (f"urn:uuid:6f1c0a3e-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
    found = encounter(72, 48, pid=None) | {"subject": {"reference": pat}}
    del found["id"]
    dx = diagnosis(enc) | {"subject": {"reference": pat}}
    del dx["id"]
    who = patient()
    del who["id"]
    doc = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": pat, "resource": who, "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": cond, "resource": dx, "request": {"method": "POST", "url": "Condition"}},
            {"fullUrl": enc, "resource": found, "request": {"method": "POST", "url": "Encounter"}},
        ],
    }
    intake = read_json(orjson.dumps(doc), "in.json")
    assert ces_facts(pipeline, intake) == [(parse_now(at(72)), parse_now(at(48)))]
    assert ces_tier(pipeline, intake) == "A"


@pytest.mark.parametrize(
    "reference",
    ["https://ehr.example.org/fhir/Encounter/e1", "Encounter/e1/_history/3"],
)
def test_an_absolute_or_versioned_reference_finds_the_encounter(pipeline: Pipeline, reference: str) -> None:
    intake = read_json(bundle(patient(), encounter(72, 48), diagnosis(reference)), "in.json")
    assert ces_facts(pipeline, intake) == [(parse_now(at(72)), parse_now(at(48)))]


def test_a_missing_encounter_leaves_the_diagnosis_undated_as_today(pipeline: Pipeline) -> None:
    missing = read_json(bundle(patient(), encounter(72, 48, eid="e2"), diagnosis("Encounter/e1")), "a.json")
    without = read_json(bundle(patient(), diagnosis(None)), "b.json")
    assert ces_facts(pipeline, missing) == ces_facts(pipeline, without) == [(None, None)]
    assert ces_tier(pipeline, missing) == ces_tier(pipeline, without)


def test_another_patients_encounter_never_dates_a_diagnosis(pipeline: Pipeline) -> None:
    intake = read_json(bundle(patient(), encounter(72, 48, pid="p2"), diagnosis()), "in.json")
    assert list(intake.patients) == ["Patient/p1"]  # an Encounter makes no patient of its own
    assert ces_facts(pipeline, intake) == [(None, None)]


def test_an_encounter_naming_no_patient_dates_the_diagnosis_that_references_it(pipeline: Pipeline) -> None:
    intake = read_json(bundle(patient(), encounter(72, 48, pid=None), diagnosis()), "in.json")
    assert intake.issues == []
    assert ces_facts(pipeline, intake) == [(parse_now(at(72)), parse_now(at(48)))]


def test_an_entered_in_error_encounter_dates_nothing(pipeline: Pipeline) -> None:
    wrong = encounter(72, 48) | {"status": "entered-in-error"}
    intake = read_json(bundle(patient(), wrong, diagnosis()), "in.json")
    assert ces_facts(pipeline, intake) == [(None, None)]


def test_encounters_make_no_facts_no_patients_and_no_issues(pipeline: Pipeline) -> None:
    alone = read_ndjson(ndjson(encounter(72, 48), encounter(5, 4, eid="e2", pid="p2")), "Encounter.ndjson")
    assert alone.patients == {} and alone.issues == []
    unreferenced = read_json(bundle(patient(), encounter(72, 48)), "in.json")
    assert [e.resource["resourceType"] for e in unreferenced.patients["Patient/p1"].entries] == ["Patient"]
    intake = read_json(bundle(patient(), encounter(72, 48), diagnosis()), "in.json")
    (mapped,) = pipeline.facts(intake)
    assert {f["ref"] for f in mapped.facts} == {"Patient/p1", "Condition/c1"}
    assert mapped.issues == [] and intake.issues == []


def test_the_history_keeps_the_dated_diagnosis_and_stores_nothing_for_the_encounter(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    tracker = Pipeline(memory=Memory(SqliteStateStore.open(tmp_path / "state.sqlite"), actor="test"))
    intake = read_json(bundle(patient(), encounter(72, 48), diagnosis()), "in.json")
    (first,) = tracker.evaluate(intake, parse_now(NOW))
    assert [(a.rule, a.tier) for a in first.alerts] == [(CES, "A")]
    stored = tracker.store.snapshot("Patient/p1").facts
    assert set(stored) == {"Patient/p1", "Condition/c1"}
    (fact,) = stored["Condition/c1"]
    assert (fact["onset"], fact["ts"]) == (parse_now(at(72)), parse_now(at(48)))
    # the next delivery, the patient alone: the remembered diagnosis keeps the alert
    (later,) = tracker.evaluate(read_json(bundle(patient()), "again.json"), parse_now(NOW) + 3600)
    assert later.remembered > 0 and [a.rule for a in later.alerts] == [CES]
