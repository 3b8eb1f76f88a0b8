"""Encounters and undated encounter diagnoses as MIMIC-IV on FHIR exports them."""

from __future__ import annotations

import orjson

from fhir_adapters.times import iso, parse_now
from rulesets.meta import ICD10CM

NOW = "2025-03-10T12:00:00Z"
CES = "cauda_equina_syndrome"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"


def at(hours_ago: float) -> str:
    return iso(parse_now(NOW) - round(hours_ago * 3600))


def patient(pid: str = "p1") -> dict:
    return {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1970-01-01"}


def encounter(start_h: float, end_h: float | None, eid: str = "e1", pid: str | None = "p1") -> dict:
    period = {"start": at(start_h)} | ({"end": at(end_h)} if end_h is not None else {})
    res = {"resourceType": "Encounter", "id": eid, "status": "finished", "period": period}
    return res | ({"subject": {"reference": f"Patient/{pid}"}} if pid else {})


def diagnosis(reference: str | None = "Encounter/e1", pid: str = "p1", code: str = "G83.4") -> dict:
    """An encounter diagnosis as MIMIC-IV on FHIR exports it: no onset, no recordedDate."""
    res = {
        "resourceType": "Condition",
        "id": "c1",
        "clinicalStatus": {"coding": [{"system": CLINICAL, "code": "active"}]},
        "verificationStatus": {"coding": [{"system": VERIFICATION, "code": "confirmed"}]},
        "code": {"coding": [{"system": ICD10CM, "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    return res | ({"encounter": {"reference": reference}} if reference else {})


def bundle(*resources: dict) -> bytes:
    entries = [{"resource": r} for r in resources]
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def ndjson(*resources: dict) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)
