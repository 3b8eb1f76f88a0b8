"""``redflags serve`` keeps patient history by default and, given a FHIR server, writes alerts back.

Real service and real FHIR server (Medplum) on 127.0.0.1: a CDS client sends Monday's record,
then Wednesday's; the Wednesday card needs Monday's data, and its Flag reaches the server once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import requests

from .cds_helpers import PATIENT_VIEW, prefetch_for, request, resources_of
from .conftest import FIXTURES
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401 (pytest fixture)
from .service_harness import running_service

NOW = "2025-03-12T12:00:00Z"  # Wednesday, the day of the second delivery
MONDAY = resources_of(FIXTURES / "history" / "gbs-monday.json")
(PATIENT,) = [r for r in MONDAY if r["resourceType"] == "Patient"]
WEDNESDAY = [PATIENT, *resources_of(FIXTURES / "history" / "gbs-wednesday.json")]


def call(url: str, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body = request("patient-view", PATIENT["id"], prefetch_for(resources))
    answer = requests.post(f"{url}/cds-services/{PATIENT_VIEW}", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["cards"]


def flags_within(server: FhirServer, seconds: float, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while True:
        found = server.search(f"Flag?subject=Patient/{PATIENT['id']}")
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_history_across_calls_and_the_flag_written_once(tmp_path: Path, fhir_server: FhirServer) -> None:  # noqa: F811
    with running_service(
        tmp_path, "--allow-unauthenticated", "--now", NOW, "--workers", "2", "--fhir-server", fhir_server.url
    ) as service:
        assert call(service.url, MONDAY) == []
        (card,) = call(service.url, WEDNESDAY)  # Monday's weakness + Wednesday's areflexia
        assert card["indicator"] == "critical" and "Guillain" in card["summary"]
        (flag,) = flags_within(fhir_server, 20, 1)
        assert flag["status"] == "active"
        (again,) = call(service.url, WEDNESDAY)  # the card again; the Flag is not re-sent
        assert again["summary"] == card["summary"]
        time.sleep(2.5)  # two passes of the delivery loop
        assert len(fhir_server.search(f"Flag?subject=Patient/{PATIENT['id']}")) == 1
        log = service.log()
    events = [orjson.loads(line) for line in log.splitlines()]
    assert [e["change"] for e in events if e["event"] == "alert_transition"] == ["raised"]  # once
    assert [e["change"] for e in events if e["event"] == "delivered"] == ["raised"]

    # without the state store, each call stands alone
    with running_service(tmp_path, "--allow-unauthenticated", "--now", NOW, "--no-state") as pure:
        assert call(pure.url, MONDAY) == [] and call(pure.url, WEDNESDAY) == []
