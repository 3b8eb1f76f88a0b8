"""Concurrent ``$evaluate`` calls never mix patients, and the event loop stays free meanwhile.

The rules engine is process-global and single-threaded (one engine per process, engine
processes for cores): these tests fire many requests at once, each for its own patient, at two
engine processes, and check every answer holds exactly its patient's alerts and nothing else.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import requests

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
    with_patient_id,
)
from .service_harness import running_service

REQUESTS = 200
THREADS = 16
RULE_DIRS = sorted(
    p for p in FIXTURES.iterdir() if p.is_dir() and p.name not in {"external", "multi", "vignettes"}
)
PATIENT_IDS = re.compile(r"cc\d{4}x")


@dataclass(frozen=True)
class Case:
    name: str
    doc: dict[str, Any]
    old_id: str
    now: str
    alerts: dict[str, str]  # rule -> severity


def single_patient_cases() -> list[Case]:
    """Positive and negative fixtures of every rule whose one patient can be renamed."""
    cases: list[Case] = []
    for folder in RULE_DIRS:
        for path in sorted(folder.glob("*.json")):
            if path.name.endswith(".expected.json"):
                continue
            expected = expectation(path)
            if len(expected["patients"]) != 1:
                continue
            ((pid, _),) = expected["patients"].items()
            doc = load(path)
            if '"id":"' + pid.removeprefix("Patient/") + '"' not in orjson.dumps(doc).decode():
                continue  # the patient is only named by a urn:uuid fullUrl
            cases.append(
                Case(
                    path.name,
                    doc,
                    pid.removeprefix("Patient/"),
                    expected["now"],
                    expected_alerts(expected).get(pid, {}),
                )
            )
    return cases


def test_cases_cover_every_rule_positive_and_negative() -> None:
    cases = single_patient_cases()
    fired = {rule for c in cases for rule in c.alerts}
    assert len(fired) == 12 and sum(1 for c in cases if not c.alerts) >= 50


def test_concurrent_requests_never_mix_patients(tmp_path: Path) -> None:
    cases = single_patient_cases()
    positives = [c for c in cases if c.alerts]
    negatives = [c for c in cases if not c.alerts]
    # two positives for each negative, spread over every rule
    plan = [
        (positives + positives + negatives)[i * 7 % (2 * len(positives) + len(negatives))]
        for i in range(REQUESTS)
    ]
    local = threading.local()

    def call(index: int) -> tuple[int, Case, requests.Response]:
        case = plan[index]
        patient = f"cc{index:04d}x"
        doc = with_patient_id(case.doc, case.old_id, patient)
        if not hasattr(local, "session"):
            local.session = requests.Session()
        if index % 2:  # half posted as a Parameters, half as the Bundle with ?now=
            return index, case, post(local.session, service.url, parameters(("bundle", doc), now=case.now))
        return index, case, post(local.session, service.url, doc, now=case.now)

    with running_service(tmp_path, "--allow-unauthenticated", "--workers", "2") as service:
        with ThreadPoolExecutor(THREADS) as pool:
            answers = list(pool.map(call, range(REQUESTS)))
        log = service.log()

    assert log.count('"event": "engine_ready"') == 2  # two engine processes, each its own engine
    engines = {line["engine"] for line in map(json.loads, log.splitlines()) if line["event"] == "alert"}
    assert len(engines) == 2  # the requests were spread over both
    assert sum(1 for _i, c, _r in answers if c.alerts) > REQUESTS // 2
    for index, case, response in answers:
        patient = f"Patient/cc{index:04d}x"
        assert response.status_code == 200, (case.name, response.text)
        bundle = response.json()
        assert alerts(bundle) == ({patient: case.alerts} if case.alerts else {}), case.name
        for kind in ("Flag", "CarePlan"):
            assert {r["subject"]["reference"] for r in resources(bundle, kind)} <= {patient}, case.name
        assert len(resources(bundle, "Flag")) == len(case.alerts)
        assert set(PATIENT_IDS.findall(response.text)) <= {patient.removeprefix("Patient/")}, case.name
        assert outcome(bundle)["issue"][0]["diagnostics"].startswith("evaluated 1 patient ("), case.name


class _SentBody:
    """A request body whose last read sets ``sent``: the client has handed over every byte."""

    def __init__(self, data: bytes) -> None:
        self._data, self._offset, self.sent = data, 0, threading.Event()

    def __len__(self) -> int:
        return len(self._data)

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk, self._offset = self._data[self._offset : end], min(end, len(self._data))
        if not chunk:
            self.sent.set()
        return chunk


def test_health_answers_while_a_large_evaluation_runs(tmp_path: Path) -> None:
    """The one engine process busy with seconds of rules work: /healthz still answers at once.

    Proven by order, not by clocks: health answers arrive after the whole large body was sent and
    before its evaluation answered; a blocked event loop would answer them only afterwards.
    """
    v01 = load(FIXTURES / "vignettes" / "V01-ces-positive.json")
    copies = [with_patient_id(v01, "v01", f"big{i:04d}") for i in range(1000)]
    big = {"resourceType": "Bundle", "type": "collection", "entry": [e for c in copies for e in c["entry"]]}
    body = _SentBody(orjson.dumps(big))
    finished: dict[str, int] = {}
    events: list[str] = []
    lock = threading.Lock()

    with running_service(
        tmp_path, "--allow-unauthenticated", "--workers", "1", "--max-body-bytes", str(len(body) + 1)
    ) as service:

        def large() -> None:
            response = requests.post(
                f"{service.url}/fhir/$evaluate",
                data=body,
                params={"now": "2025-03-10T12:00:00Z"},
                headers={"Content-Type": FHIR_JSON},
                timeout=300,
            )
            with lock:
                events.append("large")
            finished["status"] = response.status_code
            finished["flags"] = len(resources(response.json(), "Flag"))

        runner = threading.Thread(target=large)
        runner.start()
        assert body.sent.wait(timeout=60), "the large body was never sent"
        with requests.Session() as session:
            while runner.is_alive():
                assert session.get(f"{service.url}/healthz", timeout=5).status_code == 200
                with lock:
                    events.append("health")
        runner.join(timeout=300)

    assert finished["status"] == 200 and finished["flags"] == 1000
    # At least one probe was answered after the body was sent and before the evaluation answered.
    assert "health" in events[: events.index("large")], events
