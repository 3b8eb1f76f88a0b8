"""Resources per call over HTTP: 413 with an OperationOutcome naming the limit, then business as usual."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests

from bench.limits import inflate

from .conftest import FIXTURES
from .evaluate_helpers import post
from .service_harness import Service, running_service

NOW = "2025-03-10T12:00:00Z"
V01 = FIXTURES / "vignettes" / "V01-ces-positive.json"  # 10 resources
LIMIT = 40
SEARCH_KEYS = ("Condition", "MedicationRequest", "MedicationStatement", "Observation", "Procedure")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(
        tmp_path_factory.mktemp("limits"),
        *("--allow-unauthenticated", "--now", NOW, "--max-resources", str(LIMIT)),
    ) as running:
        yield running


def _v01(extra: int = 0) -> dict[str, Any]:
    return inflate(json.loads(V01.read_text()), extra)


def _cds(bundle: dict[str, Any]) -> dict[str, Any]:
    resources = [e["resource"] for e in bundle["entry"]]
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    prefetch: dict[str, Any] = {"Patient": patient}
    for key in SEARCH_KEYS:
        found = [{"resource": r} for r in resources if r["resourceType"] == key]
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset", "entry": found}
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/example", "patientId": patient["id"]},
        "prefetch": prefetch,
    }


def _cards(service: Service, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        f"{service.url}/cds-services/redflags-patient-view",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )


def test_evaluate_over_the_resource_limit_is_refused_with_413_and_the_next_call_answers(
    service: Service,
) -> None:
    refused = post(None, service.url, _v01(LIMIT), now=NOW)
    assert refused.status_code == 413, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert f"the limit is {LIMIT} resources per call" in outcome["issue"][0]["diagnostics"]
    answered = post(None, service.url, _v01(), now=NOW)
    assert answered.status_code == 200, answered.text
    kinds = [e["resource"]["resourceType"] for e in answered.json()["entry"]]
    assert "Flag" in kinds


def test_cds_prefetch_over_the_resource_limit_is_refused_with_413_and_the_next_call_answers(
    service: Service,
) -> None:
    refused = _cards(service, _cds(_v01(LIMIT)))
    assert refused.status_code == 413, refused.text
    assert f"the limit is {LIMIT} resources per call" in refused.text
    answered = _cards(service, _cds(_v01()))
    assert answered.status_code == 200, answered.text
    assert answered.json()["cards"], answered.text


def test_the_limits_are_documented_in_serve_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--max-resources" in done.stdout and "--max-facts-per-patient" in done.stdout
