"""The loopback FHIR test server behaves like a production server where our tests rely on it."""

from __future__ import annotations

import json

from fhir_adapters.intake import read_path
from fhir_adapters.output import patient_transaction
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline

from .conftest import FIXTURES
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401  (module fixture)


def test_metadata_and_read(fhir_server: FhirServer) -> None:  # noqa: F811
    assert fhir_server.url.startswith("http://127.0.0.1:") and fhir_server.url.endswith("/fhir/R4")
    assert fhir_server.get("metadata").json()["fhirVersion"] == "4.0.1"
    assert fhir_server.put("Patient/h1", {"resourceType": "Patient", "id": "h1"}).status_code in (200, 201)
    assert fhir_server.get("Patient/h1").json()["id"] == "h1"
    missing = fhir_server.get("Patient/nobody")
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"


def test_replay_transaction_is_atomic_and_idempotent(fhir_server: FhirServer, pipeline: Pipeline) -> None:  # noqa: F811
    path = FIXTURES / "vignettes" / "V01-ces-positive.json"
    fhir_server.load(json.loads(path.read_text()))  # the record the Flag's evidence names
    (result,) = pipeline.evaluate(read_path(path), parse_now("2025-03-10T12:00:00Z"))
    bundle = patient_transaction(result.alerts, pipeline.engine.metas)
    first = fhir_server.transaction(bundle)
    assert first.status_code == 200, first.text
    assert [e["response"]["status"][:3] for e in first.json()["entry"]] == ["201", "201", "201"]
    again = fhir_server.transaction(bundle).json()
    assert [e["response"]["status"][:3] for e in again["entry"]] == ["200", "200", "200"]
    flags = fhir_server.search("Flag?subject=Patient/v01")
    assert len(flags) == 1 and flags[0]["code"]["coding"][0]["code"] == "cauda_equina_syndrome"


def test_invalid_resources_are_refused(fhir_server: FhirServer) -> None:  # noqa: F811
    base = {"resourceType": "Flag", "code": {"text": "x"}, "subject": {"reference": "Patient/h1"}}
    assert fhir_server.post("Flag", {**base, "status": "active"}).status_code == 201
    for bad in ({**base, "status": "bogus"}, {**base, "status": "active", "colour": "red"}, base):
        answer = fhir_server.post("Flag", bad)
        assert answer.status_code == 400 and answer.json()["resourceType"] == "OperationOutcome", bad
    assert fhir_server.request("POST", "Flag", data="{not json").status_code == 400


def test_searches_are_paged_with_next_links(fhir_server: FhirServer) -> None:  # noqa: F811
    for i in range(5):
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": f"o{i}"},
            "subject": {"reference": "Patient/h2"},
        }
        assert fhir_server.post("Observation", observation).status_code == 201
    page = fhir_server.get("Observation?patient=h2&_count=2").json()
    assert page["total"] == 5 and len(page["entry"]) == 2
    assert [link["relation"] for link in page["link"]] == ["self", "next"]
    assert [o["code"]["text"] for o in fhir_server.search("Observation?patient=h2&_count=2")] == [
        f"o{i}" for i in range(5)
    ]
    assert len(fhir_server.search("Observation?subject=Patient/h2")) == 5
