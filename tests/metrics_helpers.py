"""Reading ``GET /metrics`` of a running service, and the engine processes behind it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import FIXTURES
from .evaluate_helpers import with_patient_id
from .service_harness import Service

NOW = "2025-03-10T12:00:00Z"
VIGNETTE = FIXTURES / "vignettes" / "V01-ces-positive.json"
#: Bound on anything awaited here: reached only when the service hangs (the defect).
BOUND_S = 60

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(service: Service, token: str | None = None) -> tuple[str, Samples]:
    """The /metrics text and its samples by (name, labels)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.get(f"{service.url}/metrics", headers=headers, timeout=BOUND_S)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return answer.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def label_values(samples: Samples, name: str, label: str) -> set[str]:
    return {dict(ls)[label] for (n, ls), _ in samples.items() if n == name and label in dict(ls)}


def bundle(patient_id: str | None = None) -> dict[str, Any]:
    doc = json.loads(VIGNETTE.read_text())
    if patient_id is None:
        return doc
    (patient,) = [e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"]
    return with_patient_id(doc, patient["id"], patient_id)


def evaluate(service: Service, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(
        f"{service.url}/fhir/$evaluate",
        data=json.dumps(body),
        headers={"Content-Type": "application/fhir+json", **headers},
        timeout=BOUND_S,
    )


def engine_pids(service: Service) -> list[int]:
    """The engine processes: the service process's children."""
    pid = service.process.pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw if item)


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND_S
    while not predicate():
        assert time.monotonic() < deadline, f"not within {BOUND_S} s: {what}"
        time.sleep(0.05)
