"""Fuzzing the FHIR readers in process (hypothesis, fixed seed): then one regression test per bug.

The readers are what turns a caller's JSON into facts: ``evaluate.input.read_body`` (``$evaluate``),
``cds.request.parse`` and ``prefetch.read_prefetch`` (CDS Hooks), ``intake.group``,
``facts.patient_facts``, ``validate`` (``--strict``) and the feedback parser. Whatever the input,
each either reads it or refuses it with its own error type (a 4xx over HTTP): any other
exception is a 500 for the caller. Every time a fact carries must be one the output can print.
"""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench import fuzz
from fhir_adapters.errors import IntakeError
from fhir_adapters.facts import patient_facts
from fhir_adapters.intake import group, reference_of
from fhir_adapters.output import fhir_instant
from fhir_adapters.terminology import Terminology
from fhir_adapters.times import EARLIEST, LATEST, birth_date, parse_now, to_epoch
from fhir_adapters.validate import _expression, required_code_issues, resource_issues
from redflags.pipeline import Pipeline
from redflags.service.cds import feedback, prefetch
from redflags.service.cds import request as cds_request
from redflags.service.cds.request import CdsRequestError
from redflags.service.cds.services import SERVICES
from redflags.service.evaluate.input import BadInput, read_body

NOW = parse_now(fuzz.NOW_TEXT)
#: CI: a few hundred examples in all, the same ones every run (no example database).
SHORT = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
TIMES = ("ts", "onset", "abated")


@pytest.fixture(scope="module")
def term(pipeline: Pipeline) -> Terminology:
    return pipeline.term


def _facts_are_printable(intake, term: Terminology) -> None:
    """Map every patient; every time a fact holds is inside the range the output can print."""
    for patient in intake.patients.values():
        mapped = patient_facts(patient, term)
        for fact in mapped.facts:
            for name in TIMES:
                if name in fact:
                    assert EARLIEST <= fact[name] <= LATEST, fact
                    fhir_instant(fact[name])
            if "v" in fact:
                assert math.isfinite(fact["v"]), fact
        orjson.dumps(mapped.facts)  # what the engine is given (orjson refuses nothing finite)


@SHORT
@given(fuzz.evaluate_calls())
def test_evaluate_reader_reads_or_refuses(term: Terminology, call: fuzz.Call) -> None:
    try:
        given_input = read_body(call.body, dict(call.params).get("now"), NOW)
    except BadInput as exc:
        assert 400 <= exc.status < 500 and exc.message
        return
    assert EARLIEST <= given_input.now <= LATEST
    fhir_instant(given_input.now)
    _facts_are_printable(given_input.intake, term)


@SHORT
@given(fuzz.cds_calls())
def test_cds_reader_reads_or_refuses(term: Terminology, call: fuzz.Call) -> None:
    service = SERVICES[call.path.rsplit("/", 1)[1]]
    try:
        request = cds_request.parse(orjson.loads(call.body), service.hook)
        found = prefetch.read_prefetch(service.prefetch, request).found
        extra = service.handler(request, NOW)
    except (CdsRequestError, orjson.JSONDecodeError):
        return
    _facts_are_printable(group("cds-hooks", [*found, *extra]), term)


@SHORT
@given(st.sampled_from(fuzz.bundles()).flatmap(fuzz.mutated))
def test_validation_reports_issues_never_raises(doc: object) -> None:
    try:
        doc = orjson.loads(fuzz._dumps(doc))  # as a request would carry it
    except orjson.JSONDecodeError:
        return
    for issue in resource_issues(doc) + required_code_issues(doc if isinstance(doc, dict) else {}):
        assert issue.code and issue.expression and issue.message


@SHORT
@given(fuzz.feedback_calls())
def test_feedback_parser_reads_or_refuses(call: fuzz.Call) -> None:
    try:
        items = feedback._items(call.body)
    except feedback._Rejected as exc:
        assert exc.status in (400, 413) and exc.message
        return
    assert 0 < len(items) <= feedback.MAX_FEEDBACK_ITEMS


# --- regressions: each was a 500 (an exception out of a reader) before -----------------------------
def _observation(**fields: object) -> dict:
    base = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2025-03-10T10:00:00Z",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}]},  # potassium
        "valueQuantity": {
            "value": 2.4,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }
    return {**base, **fields}


def _condition(**fields: object) -> dict:
    base = {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "23056005"}]},  # sciatica
        "onsetDateTime": "2025-03-01",
    }
    return {**base, **fields}


def _map(term: Terminology, *resources: dict):
    intake = group("test", [(f"Bundle.entry[{i}].resource", r, None) for i, r in enumerate(resources)])
    return intake, [patient_facts(p, term) for p in intake.patients.values()]


@pytest.mark.parametrize(
    "site",
    [
        {"extension": 5},  # facts.py: 'int' object is not iterable
        {
            "extension": [{"valueCodeableConcept": {"coding": [{"system": ["x"], "code": "7771000"}]}}]
        },  # unhashable
        {"extension": [{"valueCodeableConcept": {"coding": [{"system": {}, "code": {}}]}}]},
    ],
)
def test_a_body_site_of_the_wrong_shape_is_not_a_crash(term: Terminology, site: dict) -> None:
    _, (mapped,) = _map(term, _condition(bodySite=[site]))
    assert sorted(f["key"] for f in mapped.facts) == ["radicular_pain", "sciatica"]


@pytest.mark.parametrize("field", ["interpretation", "note", "contained"])
def test_a_number_where_an_array_belongs_is_not_a_crash(term: Terminology, field: str) -> None:
    _, (mapped,) = _map(term, _observation(**{field: 7}))
    assert [f["key"] for f in mapped.facts] == ["potassium"]


def test_a_status_that_is_a_list_is_not_a_crash(term: Terminology) -> None:
    procedure = {
        "resourceType": "Procedure",
        "id": "x1",
        "status": ["completed"],
        "subject": {"reference": "Patient/p1"},
    }
    medication = {
        "resourceType": "MedicationRequest",
        "id": "m1",
        "status": {},
        "subject": {"reference": "Patient/p1"},
    }
    _, (mapped,) = _map(term, procedure, medication)
    assert mapped.facts == []


@pytest.mark.parametrize("years", [1e300, 1e20, -5])
def test_an_impossible_onset_age_is_reported(term: Terminology, years: float) -> None:
    """1e300 raised OverflowError (int(inf)); 1e20 made a date no output could print."""
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1980-01-01"}
    condition = _condition(onsetAge={"value": years, "code": "a"})
    del condition["onsetDateTime"]
    _, (mapped,) = _map(term, patient, condition)
    assert [i.path for i in mapped.issues] == ["Bundle.entry[1].resource.onsetAge.value"]


def test_a_value_too_large_after_unit_conversion_is_missing_not_infinite(term: Terminology) -> None:
    quantity = {"value": 1e308, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"}
    d_dimer = _observation(code={"coding": [{"system": "http://loinc.org", "code": "48065-7"}]})
    d_dimer["valueQuantity"] = quantity  # x1000 to mg/L: inf, which orjson writes as null for the engine
    _, (mapped,) = _map(term, d_dimer)
    assert [f for f in mapped.facts if "v" in f] == []
    assert "value treated as missing" in mapped.issues[0].message


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+99:00",  # before year 1: engine/prepare.py raised "year 0 is out of range"
        "9999-12-31T23:59:59-99:99",  # after 9999: fhir_adapters/output.py raised "year 10000"
        "2025-03-10T12:00:00+15:00",  # FHIR zones are -14:00..+14:00
        "0050-01-01",  # inside datetime, but a rule window before it is not
        "2025-03-10T12:00:00Z\n",  # a trailing newline ($ with match)
        "2025-03-10\n",
        "\u0662\u0660\u0662\u0665-03-10",  # Arabic-Indic digits (\d)
    ],
)
def test_an_impossible_evaluation_time_is_a_400(text: str) -> None:
    body = orjson.dumps({"resourceType": "Patient", "id": "p1"})
    with pytest.raises(BadInput) as refused:
        read_body(body, text, NOW)
    assert refused.value.status == 400 and "'now'" in refused.value.message
    with pytest.raises(IntakeError):
        to_epoch(text, "x")


def test_a_birth_date_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(IntakeError):
        birth_date("1980-01-01\n", "Patient.birthDate")
    assert birth_date("1980-01-01", "Patient.birthDate").year == 1980


def test_a_prefetched_entry_without_resource_type_is_reported_not_a_crash() -> None:
    intake = group("cds-hooks", [("prefetch.Condition.entry[0].resource", {"id": "x"}, None)])
    assert [i.message for i in intake.issues] == ["not a FHIR resource (no resourceType); skipped"]
    intake = group("cds-hooks", [("prefetch.Condition.entry[0].resource", {"resourceType": {}}, None)])
    assert len(intake.issues) == 1


def test_validation_of_a_list_where_a_code_or_type_belongs_is_a_report() -> None:
    assert required_code_issues({"resourceType": ["Flag"]}) == []
    (issue,) = required_code_issues({"resourceType": "Flag", "status": ["active"]})
    assert issue.code == "code-invalid"
    assert required_code_issues({"resourceType": "Bundle", "type": "collection", "entry": 3}) == []
    nested = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": ["Patient"]}}],
    }
    assert resource_issues(nested)  # fhir.resources raised TypeError


def test_validation_of_a_deeply_nested_unknown_type_does_not_recurse() -> None:
    deep: object = "x"
    for _ in range(1015):
        deep = [deep]
    unknown = {"resource": {"resourceType": "MedicinalProduct"}}  # R4B raises KeyError: the doc is walked
    doc = {"resourceType": "Bundle", "type": "collection", "entry": [unknown, {"resource": {"x": deep}}]}
    (issue,) = resource_issues(doc)  # the walk recursed once per level: RecursionError
    assert issue.expression == "Bundle.entry[0].resource" and "MedicinalProduct" in issue.message


# --- FHIR ids and references -----------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["p1\n", "p/1", "p 1", "a" * 65, "", "p_1", 7])
def test_a_patient_without_a_fhir_id_is_skipped_with_an_issue(term: Terminology, bad: object) -> None:
    patient = {"resourceType": "Patient", "id": bad}
    intake, _ = _map(term, patient, _condition(subject={"reference": f"Patient/{bad}"}))
    if bad in ("", 7):  # no usable id: the fullUrl (none here) would be used, else a placeholder
        assert "Patient/(no id)" in intake.patients
        return
    assert intake.patients == {}
    assert intake.issues[0].path == "Bundle.entry[0].resource.id"
    assert "is not a FHIR id" in intake.issues[0].message


@pytest.mark.parametrize(
    "reference", ["Patient/p1\n", "Patient/p1/x", "https://x/Patient/p 1", "Patient/" + "a" * 65]
)
def test_a_subject_that_is_no_fhir_reference_names_no_patient(term: Terminology, reference: str) -> None:
    intake, _ = _map(term, _condition(subject={"reference": reference}))
    assert intake.patients == {}
    assert "names no Patient" in intake.issues[0].message


def test_a_resource_with_an_invalid_id_is_read_but_not_referenced_by_it(term: Terminology) -> None:
    intake, (mapped,) = _map(term, _condition(id="https://evil.example/x"))
    assert {f["ref"] for f in mapped.facts} == {"Condition/(no id)"}
    assert intake.issues[0].severity == "warning" and intake.issues[0].path.endswith(".id")


@pytest.mark.parametrize(
    ("full_url", "expected"),
    [
        ("urn:uuid:0b3c2c7c-6f0e-4b8e-9a53-0d8c0ed2d6a1", "urn:uuid:0b3c2c7c-6f0e-4b8e-9a53-0d8c0ed2d6a1"),
        ("https://ehr.example.org/fhir/Condition/c1", "https://ehr.example.org/fhir/Condition/c1"),
        ("https://ehr.example.org/a b", "Condition/(no id)"),
        ("urn:uuid:x\n", "Condition/(no id)"),
        ("javascript:alert(1)", "Condition/(no id)"),
    ],
)
def test_an_id_less_resource_is_referenced_by_a_safe_full_url_only(full_url: str, expected: str) -> None:
    assert reference_of({"resourceType": "Condition"}, full_url) == expected


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("patientId", "p1\n"),
        ("userId", "Practitioner/1\n"),
        ("hookInstance", "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea\n"),
        ("encounterId", "e1\n"),
    ],
)
def test_cds_ids_with_a_trailing_newline_are_refused(field: str, value: str) -> None:
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
    }
    if field == "hookInstance":
        body["hookInstance"] = value
    else:
        body["context"][field] = value
    with pytest.raises(CdsRequestError):
        cds_request.parse(body, "patient-view")
    fine = {
        **body,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
    }
    assert cds_request.parse(fine, "patient-view").patient_id == "p1"


def test_other_id_patterns_refuse_a_trailing_newline(term: Terminology) -> None:
    assert prefetch._READ.fullmatch("Patient/p1\n") is None and prefetch._READ.fullmatch("Patient/p1")
    assert _expression("Flag", ("status\n",)) == "Flag"  # not an element name
    assert _expression("Flag", ("status",)) == "Flag.status"
    icd10 = "http://hl7.org/fhir/sid/icd-10-cm"
    assert term.matches(icd10, "I63.511")  # only the ValueSet regex filter ^I63(\..*)?$ matches it
    assert not term.matches(icd10, "I63\n")


def test_fhir_dates_need_ascii_digits_and_nothing_after() -> None:
    assert to_epoch("2025-03-10T12:00:00Z", "x") == NOW
    assert to_epoch("2025-03-10T13:00:00+01:00", "x") == NOW
    assert to_epoch("2025-03-10T12:00:00-14:00", "x") == NOW + 14 * 3600
    with pytest.raises(IntakeError):
        to_epoch("2025-03-10T12:00:00-14:01", "x")
    with pytest.raises(IntakeError):
        to_epoch("2025-03-10T12:00:00Z ", "x")


# --- values nested 1,000 deep: their repr raised RecursionError (a 500) ---------------------------
def _deep(depth: int = 1100) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "resource",
    [
        _observation(valueQuantity={"value": _deep(), "unit": "mmol/L"}),
        _observation(valueQuantity=None, valueInteger=_deep()),
        {"resourceType": "Patient", "id": "p1", "gender": _deep()},
        {"resourceType": "Patient", "id": "p1", "birthDate": _deep()},
    ],
)
def test_a_deeply_nested_value_is_reported_not_quoted(term: Terminology, resource: dict) -> None:
    if resource.get("valueQuantity") is None:
        resource.pop("valueQuantity", None)
    _, mapped = _map(term, resource)
    messages = [i.message for m in mapped for i in m.issues]
    assert len(messages) == 1 and ("an array" in messages[0]), messages


def test_a_prefetched_entry_with_a_deep_resource_type_is_reported() -> None:
    service = SERVICES["redflags-patient-view"]
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": _deep(), "id": "c1"}}]}
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": dict.fromkeys(service.prefetch) | {"Condition": bundle},
    }
    found = prefetch.read_prefetch(service.prefetch, cds_request.parse(body, "patient-view")).found
    assert [i.message for i in group("cds-hooks", found).issues] == [
        "not a FHIR resource (no resourceType); skipped"
    ]
