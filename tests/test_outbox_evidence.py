"""Issue 10, item 17: an alert is not lost because its evidence is not on the FHIR server.

The FHIR server here is Medplum's router checking every literal reference on write, as a
Medplum project with ``checkReferencesOnWrite`` does (``FHIR_TEST_CHECK_REFERENCES=1``): a
CarePlan citing an Observation the server does not hold is refused with "Invalid reference
(Not found)". The Patient is there, the evidence is not (it lives in the EHR that called us).
"""

from __future__ import annotations

from pathlib import Path

from fhir_adapters.evidence_fallback import EVIDENCE_REFERENCE_SYSTEM, missing_evidence, without_references
from redflags.state.sqlite_store import SqliteStateStore

from .fhir_server_harness import FhirServer
from .operator_helpers import strict_server
from .writeback_helpers import NOW, redflags, v01, write

__all__ = ["strict_server"]  # the fixture, shared with the operator tests

EVIDENCE = ("Condition/{p}-low-back-pain", "Observation/{p}-pvr", "Observation/{p}-sciatica")


def _replay(tmp_path: Path, patient: str, server: FhirServer):
    resources = v01(patient)
    folder = tmp_path / "in"
    folder.mkdir()
    entries = [{"resource": r} for r in resources.values()]
    write(folder / f"{patient}.json", {"resourceType": "Bundle", "type": "collection", "entry": entries})
    state = tmp_path / "state.sqlite"
    args = ("replay", str(folder), "--now", NOW, "--state", str(state), "--fhir-server", server.url)
    return redflags(*args, "--delivery-wait", "10"), state, resources


def _cited(careplan: dict) -> tuple[set[str], set[str]]:
    """(literal references, identifier-only references) among the CarePlan's evidence."""
    refs = [*careplan.get("supportingInfo", []), *careplan.get("addresses", [])]
    literal = {
        r["reference"] for r in refs if "reference" in r and not r["reference"].startswith(("Flag/", "urn:"))
    }
    kept = {
        r["identifier"]["value"]
        for r in refs
        if r.get("identifier", {}).get("system") == EVIDENCE_REFERENCE_SYSTEM
    }
    return literal, kept


def test_the_server_really_refuses_missing_evidence(strict_server: FhirServer) -> None:
    strict_server.put("Patient/ref-probe", {"resourceType": "Patient", "id": "ref-probe"})
    plan = {
        "resourceType": "CarePlan",
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": "Patient/ref-probe"},
        "supportingInfo": [{"reference": "Observation/not-here"}],
    }
    answer = strict_server.post("CarePlan", plan)
    assert answer.status_code == 400 and "Invalid reference (Not found)" in answer.text


def test_missing_evidence_is_cited_by_identifier_and_the_alert_is_delivered(
    tmp_path: Path, strict_server: FhirServer
) -> None:
    patient = "ev0"
    strict_server.put(f"Patient/{patient}", {"resourceType": "Patient", "id": patient})
    run, state, _ = _replay(tmp_path, patient, strict_server)
    assert run.returncode == 0, run.stderr
    assert "delivered 1" in run.stderr

    (flag,) = strict_server.search(f"Flag?subject=Patient/{patient}")
    assert flag["status"] == "active"
    (careplan,) = strict_server.search(f"CarePlan?subject=Patient/{patient}")
    literal, kept = _cited(careplan)
    assert literal == set()  # nothing the server cannot resolve
    assert {e.format(p=patient) for e in EVIDENCE} <= kept
    assert any("cited by identifier only" in n["text"] for n in careplan["note"])

    store = SqliteStateStore.open(state)
    try:
        (item,) = store.deliveries()
        (alert,) = store.active(f"Patient/{patient}").values()
    finally:
        store.close()
    assert item.status == "delivered"
    note = item.outcome["issue"][0]
    assert note["severity"] == "warning" and "Observation/ev0-pvr" in note["diagnostics"]
    assert "Invalid reference (Not found)" in str(item.outcome)  # the server's reason, kept
    assert _cited(alert.careplan) == (set(), kept)  # the ledger holds what the server holds


def test_evidence_the_server_holds_stays_a_literal_reference(
    tmp_path: Path, strict_server: FhirServer
) -> None:
    patient = "ev1"
    resources = v01(patient)
    for rid in (patient, f"pr-{patient}", f"enc-{patient}", f"{patient}-pvr"):  # pvr cites the others
        strict_server.load(resources[rid])
    run, _, _ = _replay(tmp_path, patient, strict_server)
    assert run.returncode == 0, run.stderr
    (careplan,) = strict_server.search(f"CarePlan?subject=Patient/{patient}")
    literal, kept = _cited(careplan)
    assert literal == {f"Observation/{patient}-pvr"}
    assert f"Observation/{patient}-sciatica" in kept and f"Observation/{patient}-pvr" not in kept


def test_a_missing_patient_still_fails_with_the_servers_reason(
    tmp_path: Path, strict_server: FhirServer
) -> None:
    run, state, _ = _replay(tmp_path, "ev-nobody", strict_server)  # the Patient is not on the server
    assert run.returncode == 1 and "failed 1" in run.stderr, run.stderr
    store = SqliteStateStore.open(state)
    try:
        (item,) = store.deliveries()
    finally:
        store.close()
    assert item.status == "failed" and "HTTP 400" in (item.last_error or "")
    assert strict_server.search("Flag?subject=Patient/ev-nobody") == []


def _bundle_citing(*refs: str) -> dict:
    careplan = {
        "resourceType": "CarePlan",
        "identifier": [{"system": "urn:test", "value": "1"}],
        "status": "draft",
        "intent": "proposal",
        "subject": {"reference": "Patient/p"},
        "addresses": [{"reference": refs[0]}],
        "supportingInfo": [{"reference": "urn:uuid:00000000-0000-0000-0000-000000000001"}]
        + [{"reference": r} for r in refs[1:]],
    }
    entry = {"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000002", "resource": careplan}
    entry["request"] = {"method": "POST", "url": "CarePlan"}
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}


def _outcome(*issues: dict) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", **i} for i in issues]}


def test_which_references_a_rejection_names() -> None:
    bundle = _bundle_citing("Condition/c", "Observation/a", "Observation/b")
    structure = {"code": "structure", "details": {"text": "Invalid reference (Not found)"}}
    cases = [
        (_outcome({**structure, "expression": ["CarePlan.supportingInfo[2]"]}), ("Observation/b",)),
        (_outcome({**structure, "expression": ["Bundle.entry[0].resource.addresses[0]"]}), ("Condition/c",)),
        # "not found" without saying where: every evidence reference is cited by identifier
        (
            _outcome({"code": "processing", "diagnostics": "Reference target not found"}),
            ("Condition/c", "Observation/a", "Observation/b"),
        ),
        (
            _outcome(
                {
                    "code": "processing",
                    "diagnostics": "HAPI-1094: Resource Observation/a not found, "
                    "specified in path: CarePlan.supportingInfo",
                }
            ),
            ("Observation/a",),
        ),
        (_outcome({**structure, "expression": ["CarePlan.subject"]}), None),  # the Patient: no help
        (
            _outcome(
                {**structure, "expression": ["CarePlan.supportingInfo[1]"]}, {"diagnostics": "bad code"}
            ),
            None,
        ),
        (_outcome({"diagnostics": "HAPI-1094: Resource Patient/p not found"}), None),
        (None, None),
        ({"resourceType": "OperationOutcome", "issue": "nonsense"}, None),
    ]
    for outcome, expected in cases:
        found = missing_evidence(outcome, bundle)
        assert (set(found) if found else found) == (set(expected) if expected else expected), outcome
    downgraded = without_references(bundle, ["Observation/b"])
    careplan = downgraded["entry"][0]["resource"]
    assert careplan["supportingInfo"][2] == {
        "type": "Observation",
        "identifier": {"system": EVIDENCE_REFERENCE_SYSTEM, "value": "Observation/b"},
        "display": "Observation/b (not on this FHIR server)",
    }
    assert careplan["supportingInfo"][:2] == bundle["entry"][0]["resource"]["supportingInfo"][:2]
    assert bundle["entry"][0]["resource"]["supportingInfo"][2] == {"reference": "Observation/b"}  # a copy
