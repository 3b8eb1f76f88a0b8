"""FHIR resources built field by field and the facts one patient's resources yield."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_adapters.facts import PatientFacts, patient_facts
from fhir_adapters.identifiers import LATERALITY_EXTENSION
from fhir_adapters.intake import Entry, PatientGroup
from fhir_adapters.terminology import Terminology
from rulesets.meta import SNOMED

UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
PID = "Patient/p1"
WHEN = "2025-03-10T09:00:00Z"
LEFT, RIGHT = "7771000", "24028007"
LOWER_LIMB = "61685007"


def _epoch(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


T_WHEN = _epoch(2025, 3, 10, 9)


def cc(system: str, code: str, **extra) -> dict:
    return {"coding": [{"system": system, "code": code}], **extra}


def site(
    code: str = LOWER_LIMB, system: str = SNOMED, side: str | None = None, url: str = LATERALITY_EXTENSION
) -> dict:
    out = cc(system, code)
    if side is not None:
        out["extension"] = [{"url": url, "valueCodeableConcept": cc(SNOMED, side)}]
    return out


def condition(
    system: str = SNOMED,
    code: str = "23056005",
    clinical: str | None = "active",
    verification: str | None = "confirmed",
    **extra,
) -> dict:
    res: dict = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": PID},
        "code": cc(system, code),
        "onsetDateTime": WHEN,
        **extra,
    }
    if clinical is not None:
        res["clinicalStatus"] = cc(CLINICAL, clinical)
    if verification is not None:
        res["verificationStatus"] = cc(VERIFICATION, verification)
    return res


def observation(system: str = SNOMED, code: str = "449813001", status: str | None = "final", **extra) -> dict:
    res: dict = {
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": PID},
        "code": cc(system, code),
        "effectiveDateTime": WHEN,
        **extra,
    }
    if status is not None:
        res["status"] = status
    return res


def quantity(value: object, code: str, **extra) -> dict:
    return {"value": value, "unit": code, "system": UCUM, "code": code, **extra}


def patient(**extra) -> dict:
    return {"resourceType": "Patient", "id": "p1", **extra}


def run(term: Terminology, *resources: dict) -> PatientFacts:
    group = PatientGroup(PID, [Entry(f"Bundle.entry[{i}].resource", r) for i, r in enumerate(resources)])
    return patient_facts(group, term)


def by_key(result: PatientFacts, key: str) -> list[dict]:
    return [f for f in result.facts if f.get("key") == key]


def one(result: PatientFacts, key: str) -> dict:
    found = by_key(result, key)
    assert len(found) == 1, result.facts
    return found[0]
