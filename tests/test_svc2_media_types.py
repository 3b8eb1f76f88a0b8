"""Every error of the CDS Hooks endpoints is an OperationOutcome as ``application/json``; under
``/fhir`` (a FHIR operation) as ``application/fhir+json``. Real service over HTTP on 127.0.0.1.

CDS Hooks is plain JSON (its requests, cards and feedback): a CDS client reading errors of one
endpoint as ``application/json`` must not meet ``application/fhir+json`` on its neighbour.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .service_harness import Service, running_service

CDS_JSON = "application/json"
FHIR_JSON = "application/fhir+json"
MAX_BODY = 4096
BIG = b'{"x": "' + b"a" * (MAX_BODY + 100) + b'"}'


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("media-types")
    with running_service(tmp, "--allow-unauthenticated", "--max-body-bytes", str(MAX_BODY)) as running:
        yield running


def media_type(answer: requests.Response) -> str:
    return answer.headers["content-type"].split(";")[0].strip()


def is_outcome(answer: requests.Response) -> bool:
    body = answer.json()
    return body.get("resourceType") == "OperationOutcome" and bool(body.get("issue"))


CALL = "/cds-services/redflags-patient-view"
FEEDBACK = "/cds-services/redflags-patient-view/feedback"
JSON_HEADERS = {"Content-Type": "application/json"}
GZIP_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
GZIPPED = gzip.compress(b'{"resourceType": "Bundle", "type": "collection"}')

#: (id, method, path, body, headers, status, media type)
CASES = [
    ("call-415", "POST", CALL, b"{}", {"Content-Type": "text/plain"}, 415, CDS_JSON),
    ("call-400", "POST", CALL, b"{not json", JSON_HEADERS, 400, CDS_JSON),
    ("call-413", "POST", CALL, BIG, JSON_HEADERS, 413, CDS_JSON),
    ("call-404", "POST", "/cds-services/no-such-service", b"{}", JSON_HEADERS, 404, CDS_JSON),
    ("feedback-415", "POST", FEEDBACK, b"{}", {"Content-Type": "text/plain"}, 415, CDS_JSON),
    ("feedback-400", "POST", FEEDBACK, b"{not json", JSON_HEADERS, 400, CDS_JSON),
    ("feedback-404", "POST", "/cds-services/nope/feedback", b"{}", JSON_HEADERS, 404, CDS_JSON),
    ("feedback-413", "POST", FEEDBACK, BIG, JSON_HEADERS, 413, CDS_JSON),
    ("discovery-405", "POST", "/cds-services", b"{}", JSON_HEADERS, 405, CDS_JSON),
    ("evaluate-415", "POST", "/fhir/$evaluate", b"{}", {"Content-Type": "text/plain"}, 415, FHIR_JSON),
    ("evaluate-413", "POST", "/fhir/$evaluate", BIG, {"Content-Type": FHIR_JSON}, 413, FHIR_JSON),
    # a compressed body is refused by name, never inflated (a small gzip body can inflate a thousandfold)
    ("call-gzip-415", "POST", CALL, GZIPPED, GZIP_HEADERS, 415, CDS_JSON),
    ("feedback-gzip-415", "POST", FEEDBACK, GZIPPED, GZIP_HEADERS, 415, CDS_JSON),
    (
        "evaluate-gzip-415",
        "POST",
        "/fhir/$evaluate",
        GZIPPED,
        {**GZIP_HEADERS, "Content-Type": FHIR_JSON},
        415,
        FHIR_JSON,
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_errors_are_operation_outcomes_in_the_endpoints_media_type(
    service: Service,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    expected: str,
) -> None:
    answer = requests.request(method, f"{service.url}{path}", data=body, headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    assert media_type(answer) == expected
    assert is_outcome(answer)
    if "gzip" in headers.get("Content-Encoding", ""):
        assert "Content-Encoding 'gzip' not supported" in answer.json()["issue"][0]["diagnostics"]


def test_discovery_is_plain_json_and_a_good_feedback_still_200(service: Service) -> None:
    discovery = requests.get(f"{service.url}/cds-services", timeout=30)
    assert discovery.status_code == 200 and media_type(discovery) == CDS_JSON
    assert discovery.json()["services"]
    good = {
        "feedback": [{"card": "c-1", "outcome": "overridden", "outcomeTimestamp": "2025-03-10T12:00:00Z"}]
    }
    answer = requests.post(
        f"{service.url}{FEEDBACK}", data=json.dumps(good), headers=JSON_HEADERS, timeout=30
    )
    assert answer.status_code == 200, answer.text  # CDS Hooks 2.0 feedback: 200, no body defined
