"""``GET /metrics`` of a real ``redflags serve`` with its engine processes, over real HTTP.

Every counter is read back after calls that must move it: the engine processes' samples
(evaluations, alert transitions) reach the HTTP process's /metrics, also after the engine that
wrote them was killed; the outbox gauges follow a FHIR server that answers 503; and no patient
id, path or token ever appears in the text.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import requests

from fhir_adapters.outcome import outcome

from .cds_helpers import prefetch_for, request
from .fetch_servers import RawServer, answer_json
from .metrics_helpers import (
    BOUND_S,
    NOW,
    bundle,
    engine_pids,
    environ,
    evaluate,
    label_values,
    scrape,
    until,
    value,
)
from .service_harness import running_service

EVALUATE = "/fhir/$evaluate"
PATIENTS = ("metrics-patient-4711", "metrics-patient-4712", "metrics-patient-4713")


def _cds_call(url: str, patient_id: str) -> requests.Response:
    resources = [e["resource"] for e in bundle(patient_id)["entry"]]
    body = request("patient-view", patient_id, prefetch_for(resources))
    return requests.post(f"{url}/cds-services/redflags-patient-view", json=body, timeout=BOUND_S)


def test_calls_move_the_counters_of_every_process_and_no_patient_is_named(tmp_path: Path) -> None:
    unavailable = answer_json(outcome("try later", "transient"), "503 Service Unavailable")
    with RawServer(unavailable) as ehr:
        args = ("--allow-unauthenticated", "--allow-http-fhir", "--now", NOW, "--workers", "2")
        with running_service(tmp_path, *args, "--fhir-server", f"{ehr.url}/fhir") as service:
            for patient in (PATIENTS[0], PATIENTS[0], PATIENTS[1]):
                assert evaluate(service, bundle(patient)).status_code == 200
            assert _cds_call(service.url, PATIENTS[2]).status_code == 200
            missing = requests.get(f"{service.url}/fhir/Patient/{PATIENTS[0]}", timeout=BOUND_S)
            assert missing.status_code == 404
            assert ehr.wait(lambda s: len(s.hits) >= 1), "the outbox never tried the FHIR server"
            until(lambda: value(scrape(service)[1], "redflags_fhir_retries_total") >= 1, "a retry counted")
            text, samples = scrape(service)

    ok = {"method": "POST", "status": "200"}
    assert value(samples, "redflags_http_requests_total", route=EVALUATE, **ok) == 3
    assert value(samples, "redflags_http_request_duration_seconds_count", route=EVALUATE) == 3
    assert value(samples, "redflags_http_requests_total", route="unmatched", status="404") == 1
    cds = {"service": "redflags-patient-view", "hook": "patient-view"}
    assert value(samples, "redflags_cds_calls_total", status="200", **cds) == 1
    assert value(samples, "redflags_cds_call_duration_seconds_count", **cds) == 1
    # recorded in the engine processes only: summed into the HTTP process's answer
    assert value(samples, "redflags_evaluation_seconds_count") == 4
    raised = {"rule": "cauda_equina_syndrome", "change": "raised"}
    assert value(samples, "redflags_alert_transitions_total", **raised) == 3  # one per patient
    assert label_values(samples, "redflags_alert_transitions_total", "tier") - {"none"}
    # three alerts queued, none delivered (the server answers 503): pending, and retried by status
    assert value(samples, "redflags_outbox_items", status="delivered") == 0
    assert value(samples, "redflags_outbox_items", status="pending") == 3
    assert value(samples, "redflags_outbox_oldest_pending_age_seconds") > 0
    assert label_values(samples, "redflags_fhir_retries_total", "status") <= {"503", "no answer"}
    assert value(samples, "redflags_engine_processes", state="alive") == 2
    for secret in (*PATIENTS, "4711", "Patient/"):
        assert secret not in text


def test_restarts_and_deadline_kills_are_counted_and_a_dead_engines_counts_kept(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("evaluate-secret-token-31337\n")
    token_file = tmp_path / "metrics-token"
    token_file.write_text("metrics-secret-token-42\n")
    token_file.chmod(0o600)
    args = ("--allow-unauthenticated", "--tokens", str(tokens), "--now", NOW, "--call-deadline", "2")
    with running_service(tmp_path, *args, "--metrics-token-file", str(token_file)) as service:
        token = "metrics-secret-token-42"
        auth = {"Authorization": "Bearer evaluate-secret-token-31337"}
        assert evaluate(service, bundle(PATIENTS[0]), **auth).status_code == 200
        (first,) = engine_pids(service)
        folder = Path(environ(first)["REDFLAGS_METRICS_DIR"])
        assert folder.is_dir() and any(folder.glob(f"*_{first}.db"))  # the engine writes its own
        assert "REDFLAGS_METRICS_TOKEN" not in environ(first)

        os.kill(first, signal.SIGSTOP)  # its next call overruns the deadline: killed, replaced
        assert evaluate(service, bundle(PATIENTS[0]), **auth).status_code == 503
        until(lambda: engine_pids(service) not in ([], [first]), "a new engine process")
        (second,) = engine_pids(service)
        until(lambda: requests.get(f"{service.url}/readyz", timeout=BOUND_S).ok, "the new engine serves")
        os.kill(second, signal.SIGKILL)  # dies idle: replaced at the next call
        evaluate(service, bundle(PATIENTS[0]), **auth)  # 200 or 503: whichever, one restart
        until(lambda: requests.get(f"{service.url}/readyz", timeout=BOUND_S).ok, "a third engine serves")
        text, samples = scrape(service, token)

    assert value(samples, "redflags_engine_deadline_kills_total") == 1
    assert value(samples, "redflags_engine_restarts_total", reason="deadline") == 1
    assert value(samples, "redflags_engine_restarts_total", reason="died") == 1
    assert value(samples, "redflags_evaluation_seconds_count") >= 1  # the first engine's, killed since
    for secret in ("evaluate-secret-token-31337", token, PATIENTS[0]):
        assert secret not in text
    assert not folder.exists()  # the run's metric folder goes with it


def test_metrics_needs_its_token_when_one_is_set(tmp_path: Path) -> None:
    env = {"REDFLAGS_METRICS_TOKEN": "metrics-secret-token-7"}
    with running_service(tmp_path, "--allow-unauthenticated", "--no-state", env=env) as service:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic bWV0cmljcw=="}):
            answer = requests.get(f"{service.url}/metrics", headers=headers, timeout=BOUND_S)
            assert answer.status_code == 401
            assert answer.headers["www-authenticate"].startswith("Bearer")
            body = answer.json()
            assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "login"
            assert "metrics-secret-token-7" not in answer.text
        scrape(service, "metrics-secret-token-7")
        (engine,) = engine_pids(service)
        assert "metrics-secret-token-7" not in Path(f"/proc/{engine}/environ").read_text(errors="replace")


def test_readyz_is_503_while_a_store_is_unreachable_or_no_engine_serves(tmp_path: Path) -> None:
    stores = tmp_path / "stores"
    site = tmp_path / "site.toml"
    site.write_text("")
    args = ("--allow-unauthenticated", "--config", str(site))
    args += ("--state", str(stores / "state.sqlite"), "--feedback-db", str(stores / "feedback.sqlite"))
    with running_service(tmp_path, *args) as service:
        ready = requests.get(f"{service.url}/readyz", timeout=BOUND_S)
        assert ready.status_code == 200 and ready.json()["status"] == "ok"

        stores.rename(tmp_path / "moved")  # the files are no longer where the service writes
        answer = requests.get(f"{service.url}/readyz", timeout=BOUND_S)
        assert answer.status_code == 503 and answer.headers["retry-after"]
        (issue,) = answer.json()["issue"]
        assert issue["code"] == "transient" and "state store" in issue["diagnostics"]
        assert "feedback store" in issue["diagnostics"]
        assert value(scrape(service)[1], "redflags_store_errors_total", store="state") >= 1
        (tmp_path / "moved").rename(stores)
        assert requests.get(f"{service.url}/readyz", timeout=BOUND_S).status_code == 200

        site.unlink()  # a replacement engine cannot start now
        (engine,) = engine_pids(service)
        os.kill(engine, signal.SIGKILL)
        evaluate(service, bundle())  # finds it dead: replaced, in vain
        answer = requests.get(f"{service.url}/readyz", timeout=BOUND_S)
        assert answer.status_code == 503
        assert "engine processes not serving" in answer.json()["issue"][0]["diagnostics"]
