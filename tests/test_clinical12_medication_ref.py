"""A drug given as ``medicationReference`` is read (issue 12 item 7, second round).

R4 lets an order name its drug by reference to a Medication: contained (``#id``) or elsewhere in
the same input (``Medication/id``, a ``urn:uuid:`` fullUrl). Before, only
``medicationCodeableConcept`` was read, so a levofloxacin order by reference added no
myasthenia trigger note.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from fhir_adapters import terminology
from fhir_adapters.facts import patient_facts
from fhir_adapters.intake import read_json
from rulesets import VALUESET_DIR
from rulesets.meta import RXNORM

from .cds_helpers import MG, NOTE, NOW, ORDER_SIGN, call, check_response, prefetch_for, request, resources_of
from .service_harness import Service, running_service

LEVOFLOXACIN = {"coding": [{"system": RXNORM, "code": "82122", "display": "levofloxacin"}]}
ACETAMINOPHEN = {"coding": [{"system": RXNORM, "code": "161", "display": "acetaminophen"}]}
FLUOROQUINOLONE = "Fluoroquinolone antibiotic"
URN = "urn:uuid:5f0c7c9e-2b7a-4f4e-9a53-0d6f2d1c9a11"


def medication(rid: str | None, code: dict) -> dict[str, Any]:
    return {"resourceType": "Medication", **({"id": rid} if rid else {}), "code": code}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("mg-med-ref")
    with running_service(tmp, "--allow-unauthenticated", "--no-state", "--now", NOW) as svc:
        yield svc


def _order_sign(service: Service, reference: str, contained: list | None, entries: list) -> dict[str, Any]:
    """The MG patient's record with one draft MedicationRequest naming its drug by reference."""
    resources = resources_of(MG)
    (template,) = [r for r in resources if r.get("id") == "mg-b-exac-gentamicin"]
    record = [r for r in resources if r is not template]
    draft = {
        k: v
        for k, v in copy.deepcopy(template).items()
        if k not in ("authoredOn", "medicationCodeableConcept")
    } | {"status": "draft", "medicationReference": {"reference": reference}}
    if contained is not None:
        draft["contained"] = contained
    body = request("order-sign", "mg-b-exac", prefetch_for(record))
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": draft}, *entries],
    }
    (card,) = check_response(call(service, ORDER_SIGN, body))["cards"]  # the MG card, tier B
    return card


DRAFTS = [
    ("contained #id", "#levo", [medication("levo", LEVOFLOXACIN)], []),
    ("Medication/id in draftOrders", "Medication/levo", None,
     [{"resource": medication("levo", LEVOFLOXACIN)}]),
    ("urn:uuid in draftOrders", URN, None, [{"fullUrl": URN, "resource": medication(None, LEVOFLOXACIN)}]),
]  # fmt: skip


@pytest.mark.parametrize(("label", "reference", "contained", "entries"), DRAFTS, ids=[d[0] for d in DRAFTS])
def test_order_sign_reads_the_drug_of_a_referenced_medication(
    service: Service, label: str, reference: str, contained: list | None, entries: list
) -> None:
    card = _order_sign(service, reference, contained, entries)
    assert NOTE.format(FLUOROQUINOLONE) in card["detail"], label


NEGATIVES = [
    ("contained, another drug", "#med", [medication("med", ACETAMINOPHEN)], []),
    ("contained id does not match", "#other", [medication("levo", LEVOFLOXACIN)], []),
    ("reference to nothing in the call", "Medication/missing", None, []),
    ("a levofloxacin Medication not referenced", "Medication/x", None,
     [{"resource": medication("levo", LEVOFLOXACIN)}]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "reference", "contained", "entries"), NEGATIVES, ids=[n[0] for n in NEGATIVES]
)
def test_a_reference_to_another_or_no_drug_adds_no_note(
    service: Service, label: str, reference: str, contained: list | None, entries: list
) -> None:
    card = _order_sign(service, reference, contained, entries)
    assert "new drug" not in card["detail"], label


def _medication_keys(bundle: dict[str, Any]) -> set[str]:
    intake = read_json(orjson.dumps(bundle), "test")
    (group,) = intake.patients.values()
    facts = patient_facts(group, terminology.load(VALUESET_DIR))
    return {str(f["key"]) for f in facts.facts if f["t"] == "medication"}


def _bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    patient = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": patient}, *entries]}


def _statement(reference: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationStatement",
        "id": "ms1",
        "status": "active",
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2025-03-09T10:00:00Z",
        "medicationReference": {"reference": reference},
    }


@pytest.mark.parametrize(
    ("label", "reference", "medication_entry"),
    [
        ("relative reference", "Medication/levo", {"resource": medication("levo", LEVOFLOXACIN)}),
        ("absolute reference", "https://ehr.example/fhir/Medication/levo",
         {"resource": medication("levo", LEVOFLOXACIN)}),
        ("urn:uuid fullUrl", URN, {"fullUrl": URN, "resource": medication(None, LEVOFLOXACIN)}),
    ],
)  # fmt: skip
def test_a_bundle_record_by_reference_becomes_a_medication_fact(
    label: str, reference: str, medication_entry: dict[str, Any]
) -> None:
    keys = _medication_keys(_bundle({"resource": _statement(reference)}, medication_entry))
    assert "mg_drug_fluoroquinolone" in keys, label


def test_a_medication_alone_makes_no_fact_and_no_issue() -> None:
    bundle = _bundle({"resource": medication("levo", LEVOFLOXACIN)})
    intake = read_json(orjson.dumps(bundle), "test")
    (group,) = intake.patients.values()
    facts = patient_facts(group, terminology.load(VALUESET_DIR))
    assert [f for f in facts.facts if f["t"] == "medication"] == []
    assert facts.issues == [] and intake.issues == []


def test_a_prefetched_order_by_reference_reads_the_included_medication(service: Service) -> None:
    """A prefetch ``MedicationRequest?..&_include=MedicationRequest:medication`` brings the drug."""
    resources = resources_of(MG)
    (order,) = [r for r in resources if r.get("id") == "mg-b-exac-gentamicin"]
    drug = medication("levo", LEVOFLOXACIN)
    order = {k: v for k, v in order.items() if k != "medicationCodeableConcept"}
    order["medicationReference"] = {"reference": "Medication/levo"}
    record = [order if r.get("id") == "mg-b-exac-gentamicin" else r for r in resources]
    prefetch = prefetch_for(record)
    prefetch["MedicationRequest"]["entry"].append({"resource": drug, "search": {"mode": "include"}})
    (card,) = check_response(
        call(service, ORDER_SIGN, _with_no_draft(request("order-sign", "mg-b-exac", prefetch)))
    )["cards"]
    assert FLUOROQUINOLONE in card["detail"] and "Aminoglycoside" not in card["detail"]


def _with_no_draft(body: dict[str, Any]) -> dict[str, Any]:
    body["context"]["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": []}
    return body


def test_a_reference_to_a_medication_not_in_the_input_is_a_warning_not_silence() -> None:
    bundle = _bundle({"resource": _statement("Medication/elsewhere")})
    intake = read_json(orjson.dumps(bundle), "test")
    (group,) = intake.patients.values()
    facts = patient_facts(group, terminology.load(VALUESET_DIR))
    assert [f for f in facts.facts if f["t"] == "medication"] == []
    (issue,) = facts.issues
    assert issue.severity == "warning" and issue.path == "Bundle.entry[1].resource.medicationReference"
    assert "not in this input" in issue.message
