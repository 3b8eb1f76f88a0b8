"""CDS Hooks request builders and response checks shared by the service tests."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import requests

from .conftest import FIXTURES
from .service_harness import Service

NOW = "2025-03-10T12:00:00Z"
#: The myasthenia gravis record the order-sign tests add drugs to, and the card note they expect.
MG = FIXTURES / "myasthenic_crisis_risk" / "tierB-exacerbation-dx-with-triggers.json"
NOTE = "new drug that can worsen myasthenia gravis: {} on 2025-03-10"
CDS = FIXTURES / "external" / "cds-hooks"
VIGNETTES = FIXTURES / "vignettes"
PATIENT_VIEW = "redflags-patient-view"
ENCOUNTER_START = "redflags-encounter-start"
ORDER_SIGN = "redflags-order-sign"
SEARCH_KEYS = ("Condition", "MedicationRequest", "MedicationStatement", "Observation", "Procedure")
TOKEN = json.loads((CDS / "fhir-authorization.spec-2.0.1.json").read_text())["fhirAuthorization"]


def assert_no_empty(value: Any, path: str = "$") -> None:
    """CDS Hooks forbids null and empty values (the top-level ``cards`` array excepted)."""
    assert value is not None and value != "" and value != [] and value != {}, path
    if isinstance(value, dict):
        for key, item in value.items():
            assert_no_empty(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_no_empty(item, f"{path}[{i}]")


def check_response(answer: requests.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert next(iter(body)) == "cards" and set(body) <= {"cards", "systemActions"}
    for i, card in enumerate(body["cards"]):
        assert_no_empty(card, f"cards[{i}]")
    for key in set(body) - {"cards"}:
        assert_no_empty(body[key], key)
    return body


def call(service: Service, service_id: str, body: Any, **kw: Any) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return requests.post(
        f"{service.url}/cds-services/{service_id}", data=data, headers=headers, timeout=30, **kw
    )


def searchset(resources: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
        **extra,
    }


def resources_of(path: Path) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in json.loads(path.read_text())["entry"]]


def prefetch_for(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Prefetch for our templates, as a CDS client would build it from the patient's record."""
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    prefetch: dict[str, Any] = {"Patient": patient}
    for key in (*SEARCH_KEYS, "Encounter"):
        prefetch[key] = searchset([r for r in resources if r["resourceType"] == key])
    return prefetch


def request(
    hook: str, patient_id: str, prefetch: dict[str, Any] | None = None, **more: Any
) -> dict[str, Any]:
    context = {"userId": "Practitioner/example", "patientId": patient_id}
    if hook == "encounter-start":
        context["encounterId"] = "enc-1"
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return {**body, **more}


def vignette_request(name: str, hook: str = "patient-view") -> dict[str, Any]:
    resources = resources_of(VIGNETTES / f"{name}.json")
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    return request(hook, patient["id"], prefetch_for(resources))
