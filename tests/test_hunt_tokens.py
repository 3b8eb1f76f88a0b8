"""A CDS client's fhirAuthorization token that no HTTP header can carry, over real HTTP.

A token with a line break or a non-ASCII character was accepted, then failed in the HTTP client
(ValueError, UnicodeEncodeError): the caller got the generic 412 and the log blamed fhirServer
("broke off the exchange"). It is a malformed request: 400, naming the field, never the token.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from .cds_helpers import PATIENT_VIEW
from .service_harness import Service, free_port, running_service

SECRET = "SECRET-token-4f1d"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp: Path = tmp_path_factory.mktemp("hunt-tokens")
    with running_service(tmp, "--allow-unauthenticated", "--allow-http-fhir", "--no-state") as running:
        yield running


@pytest.mark.parametrize("token", [f"{SECRET}\r\nX-Injected: 1", f"{SECRET} é", f"{SECRET}\u2603", " "])
def test_a_token_no_header_can_carry_is_a_400_that_never_shows_it(service: Service, token: str) -> None:
    body = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": f"http://127.0.0.1:{free_port()}/fhir",
        "fhirAuthorization": {
            "access_token": token,
            "token_type": "Bearer",
            "scope": "patient/*.read",
            "subject": "redflags",
            "expires_in": 300,
        },
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
    }
    answer = requests.post(f"{service.url}/cds-services/{PATIENT_VIEW}", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "fhirAuthorization.access_token" in answer.json()["issue"][0]["diagnostics"]
    assert SECRET not in answer.text and SECRET not in service.log()
