"""The service's log is JSON lines with request ids, and never shows patient data or tokens."""

from __future__ import annotations

from pathlib import Path

import orjson
import requests

from .evaluate_helpers import FHIR_JSON, FIXTURES, load, parameters, post, with_patient_id
from .service_harness import running_service

PATIENT_ID = "zq-private-4411"
NAME = ("Helen", "Marsh")  # the V01 patient's name
MRN = "MRN-V01"
BIRTH = "1980-08-21"
BAD_BIRTH = "1970-02-30"  # quoted in the answer's OperationOutcome, must not reach the log
TOKEN = "tok-SECRET-9f8e7d6c5b4a"
SECRETS = (PATIENT_ID, *NAME, MRN, BIRTH, BAD_BIRTH, TOKEN)
#: Lines written before any request: they cannot carry a request id.
STARTUP_EVENTS = {
    "unauthenticated",
    "service_ready",
    "engine_ready",
    "listening",
    "state.created",
    "state_store",
}


def test_log_lines_have_request_ids_and_no_patient_data_or_tokens(tmp_path: Path) -> None:
    v01 = with_patient_id(load(FIXTURES / "vignettes" / "V01-ces-positive.json"), "v01", PATIENT_ID)
    assert all(s in orjson.dumps(v01).decode() for s in (PATIENT_ID, *NAME, MRN, BIRTH))
    b12 = load(FIXTURES / "b12_deficiency_neuropathy" / "tierB-b12-before-replacement-counts.json")
    bad_patient = {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "name": [{"family": NAME[1]}],
        "birthDate": BAD_BIRTH,
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with running_service(tmp_path, "--allow-unauthenticated") as service:
        answers = [
            post(None, service.url, v01, now="2025-03-10T12:00:00Z", headers=auth),
            post(None, service.url, parameters(("bundle", v01), now="2025-03-10T12:00:00Z"), headers=auth),
            post(None, service.url, v01, now="2025-01-01T00:00:00Z", headers=auth),  # records "in the future"
            post(None, service.url, b12, now="2025-03-10T12:00:00Z", headers=auth),  # treatment censoring
            post(None, service.url, bad_patient, headers=auth),
            post(None, service.url, bad_patient, now=f"{BIRTH} {NAME[0]}", headers=auth),  # 400, quotes now
            post(None, service.url, b'{"name": "' + NAME[1].encode() + b'"', headers=auth),  # invalid JSON
            post(None, service.url, v01, content_type="text/plain", headers=auth),
            requests.get(f"{service.url}/fhir/Patient/{PATIENT_ID}", headers=auth, timeout=5),
            requests.get(f"{service.url}/fhir/$evaluate?patient={PATIENT_ID}", headers=auth, timeout=5),
            requests.get(f"{service.url}/healthz", headers=auth, timeout=5),
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 400, 400, 415, 404, 405, 200]
        assert PATIENT_ID in answers[0].text and BAD_BIRTH in answers[4].text  # the answers do carry them
        text = service.log()

    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert lines, "nothing logged"
    for line in lines:
        if line["event"] not in STARTUP_EVENTS:
            assert isinstance(line.get("request_id"), str) and len(line["request_id"]) == 16, line
    requests_logged = {line["request_id"]: line for line in lines if line["event"] == "request"}
    for answer in answers:
        assert requests_logged[answer.headers["X-Request-ID"]]["status"] == answer.status_code
    assert requests_logged[answers[8].headers["X-Request-ID"]]["route"] == "(no route)"
    # lines written on the engine thread carry the request id of the request they belong to
    engine = {line["event"]: line["request_id"] for line in lines if line["event"] not in STARTUP_EVENTS}
    assert engine["future_records_ignored"] == answers[2].headers["X-Request-ID"]
    assert engine["results_ignored_after_treatment"] == answers[3].headers["X-Request-ID"]
    assert sum(1 for line in lines if line["event"] == "alert") >= 2

    for secret in SECRETS:
        assert secret not in text, f"{secret!r} found in the service log"
    assert "Bearer" not in text and FHIR_JSON in answers[0].headers["Content-Type"]
