"""``POST /fhir/$evaluate`` over real HTTP: Bundles, Parameters, single resources, and every refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from fhir_adapters.validate import validate
from redflags.pipeline import Pipeline
from redflags.service.evaluate.routes import WHAT_IF

from .evaluate_helpers import (
    FHIR_JSON,
    FIXTURES,
    alerts,
    expectation,
    expected_alerts,
    load,
    outcome,
    parameters,
    post,
    resources,
)
from .service_harness import Service, running_service

NOW = "2025-03-10T12:00:00Z"
V01 = FIXTURES / "vignettes" / "V01-ces-positive.json"
V02 = FIXTURES / "vignettes" / "V02-ces-near-miss-unilateral-sciatica.json"
EXTERNAL = sorted(p for p in (FIXTURES / "external" / "fhir-r4").glob("*.json") if ".expected." not in p.name)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("evaluate"), "--allow-unauthenticated") as running:
        yield running


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service whose body limit (4096 bytes) the 13 kB V01 fixture exceeds."""
    with running_service(
        tmp_path_factory.mktemp("small"), "--allow-unauthenticated", "--max-body-bytes", "4096"
    ) as running:
        yield running


def ok(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == FHIR_JSON
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert all(e["fullUrl"].startswith("urn:uuid:") for e in bundle["entry"])
    validate(bundle)
    return bundle


def refused(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == FHIR_JSON
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    return body["issue"][0]


def test_positive_bundle_gives_the_flag_and_careplan_replay_writes(
    service: Service, pipeline: Pipeline
) -> None:
    bundle = ok(post(None, service.url, load(V01), now=NOW))
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["Device", "Flag", "CarePlan", "OperationOutcome"]
    (flag,) = resources(bundle, "Flag")
    (careplan,) = resources(bundle, "CarePlan")
    assert alerts(bundle) == {"Patient/v01": {"cauda_equina_syndrome": "critical"}}
    assert careplan["subject"] == {"reference": "Patient/v01"}
    assert flag["period"]["start"] == NOW
    flag_url = bundle["entry"][1]["fullUrl"]
    assert careplan["supportingInfo"][0] == {"reference": flag_url}
    assert flag["author"]["reference"] == bundle["entry"][0]["fullUrl"]  # the Device, in the Bundle

    (result,) = pipeline.evaluate(read_path(V01), parse_now(NOW))
    replayed = result.transaction(pipeline)["entry"]
    assert [(e["fullUrl"], e["resource"]) for e in replayed] == [
        (e["fullUrl"], e["resource"]) for e in bundle["entry"][:3]
    ]

    issues = outcome(bundle)["issue"]
    assert issues[0]["diagnostics"] == (
        "evaluated 1 patient (10 resources) at 2025-03-10T12:00:00Z: 1 alert; 1 issue listed below"
    )
    assert issues[-1]["diagnostics"] == WHAT_IF  # now=NOW is not the service's clock
    # the Encounter is read: it dates the Conditions that reference it (14.4)
    assert {(i["diagnostics"], i["expression"][0]) for i in issues[1:-1]} == {
        ("1 Practitioner entry not read: no rule uses this resource type", "Bundle.entry[1].resource"),
    }


def test_negative_bundle_gives_only_the_outcome(service: Service) -> None:
    assert expected_alerts(expectation(V02)) == {}
    bundle = ok(post(None, service.url, load(V02), now=NOW))
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["OperationOutcome"]
    assert outcome(bundle)["issue"][0]["diagnostics"].startswith("evaluated 1 patient (")
    assert f"at {NOW}: 0 alerts;" in outcome(bundle)["issue"][0]["diagnostics"]


def test_parameters_carry_the_bundle_and_now(service: Service) -> None:
    later = "2025-03-10T13:30:00Z"
    wrapped = ok(post(None, service.url, parameters(("bundle", load(V01)), now=later)))
    direct = ok(post(None, service.url, load(V01), now=later))
    assert resources(wrapped, "Flag") == resources(direct, "Flag")
    assert resources(wrapped, "Flag")[0]["period"]["start"] == later
    assert f"at {later}:" in outcome(wrapped)["issue"][0]["diagnostics"]
    # the expressions name the element inside the Parameters
    assert "Parameters.parameter[0].resource.entry[1].resource" in {
        x for i in outcome(wrapped)["issue"] for x in i.get("expression", [])
    }


def test_parameters_with_several_resources_are_one_input(service: Service) -> None:
    """Patient and findings sent as separate ``resource`` parameters are joined per patient."""
    entries = [e["resource"] for e in load(V01)["entry"]]
    body = parameters(*[("resource", r) for r in entries], now=NOW)
    assert alerts(ok(post(None, service.url, body))) == {"Patient/v01": {"cauda_equina_syndrome": "critical"}}


def test_without_now_the_current_time_is_used(service: Service) -> None:
    bundle = ok(post(None, service.url, load(V01)))
    assert f"at {NOW}:" not in outcome(bundle)["issue"][0]["diagnostics"]
    assert "at 20" in outcome(bundle)["issue"][0]["diagnostics"]


def test_single_observation_resource(service: Service) -> None:
    path = FIXTURES / "external" / "fhir-r4" / "us-core.Observation-serum-potassium.json"
    observation = load(path)
    bundle = ok(post(None, service.url, observation, now=NOW))
    (pid,) = expectation(path)["patients"]
    assert pid == observation["subject"]["reference"]
    assert alerts(bundle) == {}
    assert outcome(bundle)["issue"][0]["diagnostics"].startswith("evaluated 1 patient (1 resource) at ")


def test_multi_patient_collection(service: Service) -> None:
    path = FIXTURES / "multi" / "three-patients-collection.json"
    bundle = ok(post(None, service.url, load(path), now=expectation(path)["now"]))
    assert (
        alerts(bundle)
        == expected_alerts(expectation(path))
        == {
            "Patient/m1": {"cauda_equina_syndrome": "critical"},
            "Patient/m2": {"guillain_barre_syndrome": "urgent"},
        }
    )
    assert len(resources(bundle, "Device")) == 1 and len(resources(bundle, "CarePlan")) == 2


def test_skipped_and_invalid_entries_are_listed(service: Service) -> None:
    body = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1", "birthDate": "1970-02-30"}},
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "CK"}}},
            {"request": {"method": "DELETE", "url": "Flag/1"}},
        ],
    }
    issues = outcome(ok(post(None, service.url, body, now=NOW)))["issue"]
    assert issues[0]["diagnostics"].endswith("2 issues listed below")
    by_path = {i["expression"][0]: i for i in issues[1:-1]}
    assert by_path["Bundle.entry[1].resource"]["severity"] == "warning"
    assert by_path["Bundle.entry[1].resource"]["diagnostics"] == (
        "Observation names no Patient in subject/patient; skipped"
    )
    (birth,) = (i for path, i in by_path.items() if path.startswith("Bundle.entry[0].resource"))
    assert birth["severity"] == "error" and "1970-02-30" in birth["diagnostics"]


def test_nothing_skipped_is_said(service: Service) -> None:
    body = {"resourceType": "Patient", "id": "p1", "birthDate": "1970-02-03"}
    issues = outcome(ok(post(None, service.url, body, now=NOW)))["issue"]
    assert issues == [
        {
            "severity": "information",
            "code": "informational",
            "diagnostics": f"evaluated 1 patient (1 resource) at {NOW}: 0 alerts; nothing skipped",
        },
        {"severity": "information", "code": "informational", "diagnostics": WHAT_IF},  # NOW: not the clock
    ]


def test_no_patient_is_a_warning(service: Service) -> None:
    body = {"resourceType": "Bundle", "type": "collection", "entry": []}
    issues = outcome(ok(post(None, service.url, body, now=NOW)))["issue"]
    assert issues[1]["severity"] == "warning" and issues[1]["code"] == "not-found"


@pytest.mark.parametrize("path", EXTERNAL, ids=lambda p: p.name)
def test_third_party_examples_are_accepted(service: Service, path: Path) -> None:
    expected = expectation(path)
    bundle = ok(post(None, service.url, path.read_bytes(), now=expected["now"]))
    assert alerts(bundle) == expected_alerts(expected)
    summary = outcome(bundle)["issue"][0]["diagnostics"]
    count = len(expected["patients"])
    assert summary.startswith(f"evaluated {count} patient{'' if count == 1 else 's'} (")


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/fhir+json; charset=utf-8", "Application/JSON;charset=UTF-8"],
)
def test_json_media_types_are_accepted(service: Service, content_type: str) -> None:
    ok(post(None, service.url, load(V02), now=NOW, content_type=content_type))


def test_percent_encoded_dollar_reaches_the_operation(service: Service) -> None:
    response = requests.post(
        f"{service.url}/fhir/%24evaluate?now={NOW}",
        data=V01.read_bytes(),
        headers={"Content-Type": FHIR_JSON},
        timeout=30,
    )
    assert alerts(ok(response)) == {"Patient/v01": {"cauda_equina_syndrome": "critical"}}


@pytest.mark.parametrize(
    ("body", "now", "message", "expression"),
    [
        (b"{", None, "invalid JSON: unexpected end of data: line 1 column 2 (char 1)", None),
        (b"  ", None, "empty body: send a FHIR Bundle, Parameters or resource", None),
        (b"[1]", None, "not a FHIR resource: expected a JSON object, got an array", None),
        (b'{"id": "x"}', None, "not a FHIR resource: no resourceType", None),
        (
            b'{"resourceType": "ValueSet"}',
            None,
            "a ValueSet cannot hold patient data: send a Bundle, a Parameters, "
            "or a resource of a patient (Patient, Condition, Observation, ...)",
            "ValueSet",
        ),
        (
            b'{"resourceType": "Bundle", "entry": {}}',
            None,
            "Bundle.entry: expected an array",
            None,
        ),
        (
            b'{"resourceType": "Parameters", "parameter": [{"name": "patients", "resource": {}}]}',
            None,
            "unknown parameter 'patients' (accepted: 'bundle', 'resource', 'now')",
            "Parameters.parameter[0].name",
        ),
        (
            b'{"resourceType": "Parameters", "parameter": [{"name": "now", "valueDateTime": "2025-03-10"}]}',
            None,
            "Parameters holds no 'bundle' or 'resource' parameter",
            "Parameters.parameter",
        ),
        (
            b'{"resourceType": "Parameters", "parameter": [{"name": "bundle", '
            b'"resource": {"resourceType": "Patient"}}]}',
            None,
            "parameter 'bundle' holds a Patient: use 'resource' for single resources",
            "Parameters.parameter[0].resource",
        ),
        (
            b'{"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": '
            b'{"resourceType": "Patient"}}, {"name": "now", "valueDateTime": "2025-03-10T12:00"}]}',
            None,
            "'now': dateTime with a time but no time zone: '2025-03-10T12:00'",
            "Parameters.parameter[1].valueDateTime",
        ),
        (
            b'{"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": '
            b'{"resourceType": "Patient"}}, {"name": "now", "valueDateTime": "2025-03-10T12:00:00Z"}]}',
            NOW,
            "'now' given both in the URL and in Parameters: give it once",
            "Parameters",
        ),
        (b'{"resourceType": "Patient"}', "yesterday", "'now': not a FHIR date/dateTime: 'yesterday'", "now"),
    ],
)
def test_bad_bodies_are_400_with_an_outcome(
    service: Service, body: bytes, now: str | None, message: str, expression: str | None
) -> None:
    issue = refused(post(None, service.url, body, now=now), 400)
    assert issue["code"] == "invalid" and issue["diagnostics"] == message
    assert issue.get("expression") == ([expression] if expression else None)


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        (
            "text/plain",
            "Content-Type 'text/plain' not supported: send application/fhir+json or application/json",
        ),
        (
            "application/xml",
            "Content-Type 'application/xml' not supported: send application/fhir+json or application/json",
        ),
        ("application/json; charset=latin-1", "charset 'latin-1' not supported: JSON is UTF-8"),
        ("", "no Content-Type: send application/fhir+json or application/json"),
    ],
)
def test_wrong_content_type_is_415(service: Service, content_type: str, message: str) -> None:
    issue = refused(post(None, service.url, load(V02), content_type=content_type), 415)
    assert issue == {"severity": "error", "code": "not-supported", "diagnostics": message}


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405(service: Service, method: str) -> None:
    response = requests.request(method, f"{service.url}/fhir/$evaluate", timeout=10)
    issue = refused(response, 405)
    assert response.headers["Allow"] == "POST"
    assert (
        issue["code"] == "not-supported" and issue["diagnostics"] == f"method {method} not allowed: use POST"
    )


def test_body_over_the_limit_is_413_with_content_length(small: Service) -> None:
    body = V01.read_bytes()
    assert len(body) > 4096
    issue = refused(post(None, small.url, body), 413)
    assert issue == {
        "severity": "error",
        "code": "too-costly",
        "diagnostics": "request body larger than the limit of 4096 bytes",
    }
    assert '"status": 413' in small.log()


def test_body_over_the_limit_is_413_when_chunked(small: Service) -> None:
    """No Content-Length (chunked transfer): the body is counted as it is read."""
    body = V01.read_bytes()
    chunks = iter([body[i : i + 1000] for i in range(0, len(body), 1000)])
    response = requests.post(
        f"{small.url}/fhir/$evaluate", data=chunks, headers={"Content-Type": FHIR_JSON}, timeout=30
    )
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert refused(response, 413)["diagnostics"] == "request body larger than the limit of 4096 bytes"


def test_chunked_body_under_the_limit_is_read(small: Service) -> None:
    body = orjson.dumps({"resourceType": "Patient", "id": "p1"})
    response = requests.post(
        f"{small.url}/fhir/$evaluate",
        data=iter([body[:10], body[10:]]),
        headers={"Content-Type": FHIR_JSON},
        timeout=30,
    )
    assert ok(response)["entry"][0]["resource"]["issue"][0]["diagnostics"].startswith("evaluated 1 patient")


def test_unauthenticated_caller_gets_401_outcome(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("a-static-token-of-an-integration-engine\n")
    clients = tmp_path / "clients.json"
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = {**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1"}
    clients.write_text(
        json.dumps({"clients": [{"iss": "https://ehr.example.org/", "jwks": {"keys": [jwk]}}]})
    )
    with running_service(tmp_path, "--clients", str(clients), "--tokens", str(tokens)) as locked:
        response = post(None, locked.url, load(V01), now=NOW)
        assert refused(response, 401)["code"] == "login"
        assert requests.get(f"{locked.url}/healthz", timeout=5).status_code == 200


def test_operation_is_documented(service: Service) -> None:
    spec = requests.get(f"{service.url}/openapi.json", timeout=5).json()
    operation = spec["paths"]["/fhir/$evaluate"]["post"]
    assert set(operation["requestBody"]["content"]) == {FHIR_JSON, "application/json"}
    assert {"200", "400", "413", "415"} <= set(operation["responses"])
    assert [p["name"] for p in operation["parameters"]] == ["now"]


def test_size_limit_covers_every_post_endpoint(small: Service) -> None:
    response = requests.post(
        f"{small.url}/cds-services/any-service",
        data=V01.read_bytes(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413 and response.headers["Content-Type"] == "application/json"  # CDS
    assert response.json()["issue"][0]["code"] == "too-costly"
