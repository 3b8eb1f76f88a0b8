"""CDS prefetch of what dates a diagnosis (its Encounter, docs/clinical-policy.md#encounter-dates) and of the
Medication a medication record names by reference: from prefetch, and read from fhirServer (a real FHIR
server, Medplum) when the client did not prefetch them. Real service over HTTP on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from rulesets.cauda_equina_syndrome import META as CES

from .codes_helpers import NOW, diagnosis, encounter, patient
from .conftest import FIXTURES
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401  (module fixture)
from .service_harness import Service, running_service

PATIENT_VIEW = "redflags-patient-view"
TOKEN = {
    "access_token": "svc2-opaque",
    "token_type": "Bearer",
    "expires_in": 300,
    "scope": "x",
    "subject": "s",
}
RECORD_KEYS = ("Condition", "MedicationRequest", "MedicationStatement", "Observation", "Procedure")
MG = FIXTURES / "myasthenic_crisis_risk" / "tierB-exacerbation-dx-with-triggers.json"
GENTAMICIN = "mg-b-exac-gentamicin"
AMBULATORY = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("svc2-prefetch")
    args = ("--allow-unauthenticated", "--allow-http-fhir", "--now", NOW, "--fhir-timeout", "5", "--no-state")
    with running_service(tmp, *args) as running:  # --no-state: every call stands alone
        yield running


def searchset(resources: list[dict[str, Any]], included: list[dict[str, Any]] = ()) -> dict[str, Any]:
    entries = [{"resource": r, "search": {"mode": "match"}} for r in resources]
    entries += [{"resource": r, "search": {"mode": "include"}} for r in included]
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def prefetch_of(resources: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    (pat,) = [r for r in resources if r["resourceType"] == "Patient"]
    out: dict[str, Any] = {"Patient": pat}
    for key in RECORD_KEYS:
        out[key] = searchset([r for r in resources if r["resourceType"] == key])
    return out | more


def call(service: Service, patient_id: str, **body: Any) -> list[dict[str, Any]]:
    request = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        **body,
    }
    answer = requests.post(
        f"{service.url}/cds-services/{PATIENT_VIEW}",
        data=json.dumps(request),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["cards"]


def ces_cards(cards: list[dict[str, Any]]) -> list[str]:
    return [c["indicator"] for c in cards if c["source"]["label"] == CES.source_label]


def last_call_log(service: Service) -> dict[str, Any]:
    return [json.loads(x) for x in service.log().splitlines() if '"cds_call"' in x][-1]


# --- item 1: the Encounter that dates a diagnosis ----------------------------------------------


def test_discovery_asks_for_the_encounters_bounded(service: Service) -> None:
    services = requests.get(f"{service.url}/cds-services", timeout=10).json()["services"]
    for entry in services:
        template = entry["prefetch"]["Encounter"]
        assert template.startswith("Encounter?patient={{context.patientId}}&")
        assert "_count=100" in template and "_sort=-date" in template


def test_a_diagnosis_dated_only_by_its_encounter_fires_from_prefetch(service: Service) -> None:
    record = [patient(), diagnosis()]
    prefetch = prefetch_of(record, Encounter=searchset([encounter(72, 48)]))
    assert ces_cards(call(service, "p1", prefetch=prefetch)) == ["critical"]
    # the same diagnosis of an encounter a month ago is not new: no card
    old = prefetch_of(record, Encounter=searchset([encounter(24 * 30, 24 * 28)]))
    assert ces_cards(call(service, "p1", prefetch=old)) == []


def test_a_later_page_of_prefetched_encounters_is_never_followed(service: Service) -> None:
    """Encounters are read to the first page (the most recent): no fhirServer needed for the rest."""
    first = searchset([encounter(72, 48)]) | {
        "link": [{"relation": "next", "url": "https://ehr.example.org/fhir/Encounter?page=2"}]
    }
    prefetch = prefetch_of([patient(), diagnosis()], Encounter=first)
    assert ces_cards(call(service, "p1", prefetch=prefetch)) == ["critical"]


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirServer) -> FhirServer:  # noqa: F811
    """svc2-p1: an undated CES diagnosis and its Encounter three days ago; the MG record of
    mg-b-exac with gentamicin ordered by reference to a Medication (not contained)."""
    pat = patient("svc2-p1")
    enc = encounter(72, 48, eid="svc2-e1", pid="svc2-p1") | {"class": AMBULATORY}  # R4: class 1..1
    dx = diagnosis("Encounter/svc2-e1", pid="svc2-p1") | {"id": "svc2-c1"}
    for resource in (pat, enc, dx):
        fhir_server.load(resource)
    fhir_server.load(by_reference(mg_record()))
    return fhir_server


def test_a_diagnosis_dated_only_by_its_encounter_fires_from_fhir_server(
    service: Service, loaded: FhirServer
) -> None:
    cards = call(service, "svc2-p1", fhirServer=loaded.url, fhirAuthorization=TOKEN)
    assert ces_cards(cards) == ["critical"]
    assert "Encounter" in last_call_log(service)["fetched"]


# --- item 2: a medicationReference to a Medication that is not contained -----------------------


def mg_record() -> list[dict[str, Any]]:
    """mg-b-exac's record, gentamicin ordered this morning (a new trigger drug on the card)."""
    record = [e["resource"] for e in json.loads(MG.read_text())["entry"]]
    for resource in record:
        if resource.get("id") == GENTAMICIN:
            resource["authoredOn"] = "2025-03-10T08:00:00Z"
    return record


def gentamicin_medication() -> dict[str, Any]:
    (order,) = [r for r in mg_record() if r.get("id") == GENTAMICIN]
    return {"resourceType": "Medication", "id": "svc2-gentamicin", "code": order["medicationCodeableConcept"]}


def by_reference(record: list[dict[str, Any]]) -> dict[str, Any]:
    """The record as a Bundle, the gentamicin order naming its drug by ``Medication/...``."""
    out = copy.deepcopy(record)
    for resource in out:
        if resource.get("id") == GENTAMICIN:
            del resource["medicationCodeableConcept"]
            resource["medicationReference"] = {"reference": "Medication/svc2-gentamicin"}
    out.append(gentamicin_medication())
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in out]}


def detail(cards: list[dict[str, Any]]) -> list[str]:
    return [c.get("detail", "") for c in cards]


def test_discovery_includes_the_medications_of_medication_records(service: Service) -> None:
    for entry in requests.get(f"{service.url}/cds-services", timeout=10).json()["services"]:
        assert entry["prefetch"]["MedicationRequest"].endswith("&_include=MedicationRequest:medication")
        assert entry["prefetch"]["MedicationStatement"].endswith("&_include=MedicationStatement:medication")


def test_a_referenced_medication_read_from_fhir_server_counts_as_the_coded_drug(
    service: Service, loaded: FhirServer
) -> None:
    record = mg_record()
    coded = call(service, "mg-b-exac", prefetch=prefetch_of(record, Encounter=None))
    without = [r for r in record if r.get("id") != GENTAMICIN]
    assert detail(call(service, "mg-b-exac", prefetch=prefetch_of(without, Encounter=None))) != detail(coded)
    fetched = call(service, "mg-b-exac", fhirServer=loaded.url, fhirAuthorization=TOKEN)
    assert detail(fetched) == detail(coded)
    assert any("Aminoglycoside" in text for text in detail(fetched))
    assert "MedicationRequest" in last_call_log(service)["fetched"]


def test_a_referenced_medication_included_in_the_prefetch_counts_as_the_coded_drug(service: Service) -> None:
    record = mg_record()
    coded = call(service, "mg-b-exac", prefetch=prefetch_of(record, Encounter=None))
    referenced = [e["resource"] for e in by_reference(record)["entry"]]
    orders = [r for r in referenced if r["resourceType"] == "MedicationRequest"]
    prefetch = prefetch_of(referenced, Encounter=None)
    prefetch["MedicationRequest"] = searchset(orders, included=[gentamicin_medication()])
    assert detail(call(service, "mg-b-exac", prefetch=prefetch)) == detail(coded)


def test_a_prefetch_without_the_included_medication_has_it_read_from_fhir_server(
    service: Service, loaded: FhirServer
) -> None:
    """A client that ignored ``_include`` (or a server without it): the Medication is read by id."""
    record = mg_record()
    coded = call(service, "mg-b-exac", prefetch=prefetch_of(record, Encounter=None))
    referenced = [e["resource"] for e in by_reference(record)["entry"]]
    bare = prefetch_of([r for r in referenced if r["resourceType"] != "Medication"], Encounter=None)
    answer = call(service, "mg-b-exac", prefetch=bare, fhirServer=loaded.url, fhirAuthorization=TOKEN)
    assert detail(answer) == detail(coded)
    assert last_call_log(service)["fetched"] == ["Medication"]
    # without fhirServer the drug stays unknown (no 412: the rest of the record is complete)
    assert detail(call(service, "mg-b-exac", prefetch=bare)) != detail(coded)


def test_a_client_that_predates_the_encounter_key_still_gets_its_cards(service: Service) -> None:
    """Encounter (and Medication) only refine: absent and unobtainable, the call goes on (no 412)."""
    record = [patient(), diagnosis() | {"onsetDateTime": "2025-03-08T12:00:00Z"}]
    assert ces_cards(call(service, "p1", prefetch=prefetch_of(record))) == ["critical"]
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}/fhir"
    cards = call(service, "p1", prefetch=prefetch_of(record), fhirServer=dead, fhirAuthorization=TOKEN)
    assert ces_cards(cards) == ["critical"]
    line = [json.loads(x) for x in service.log().splitlines() if "cds_optional_prefetch_unavailable" in x][-1]
    assert line["keys"] == ["Encounter"] and TOKEN["access_token"] not in service.log()
