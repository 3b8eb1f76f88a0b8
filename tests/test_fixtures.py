"""Replay the whole fixture corpus and compare with the expected alerts beside each file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_adapters.intake import read_path
from fhir_adapters.output import patient_transaction
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.replay import expand

from .conftest import FIXTURES

CASES = sorted(p for p in expand([FIXTURES]) if "external" not in p.parts)
EXTERNAL = sorted(expand([FIXTURES / "external"]))


def _expected(path: Path) -> dict:
    stem = path.name.rsplit(".", 1)[0]
    return orjson.loads(path.with_name(f"{stem}.expected.json").read_bytes())


def test_every_fixture_has_its_expectation() -> None:
    assert len(CASES) >= 40
    for path in CASES:
        assert _expected(path)["patients"], path


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_alerts_match_expected(path: Path, pipeline: Pipeline) -> None:
    expected = _expected(path)
    results = pipeline.evaluate(read_path(path), parse_now(expected["now"]))
    got = {r.pid: sorted((a.rule, a.severity) for a in r.alerts) for r in results}
    want = {
        pid: sorted((a["rule"], a["severity"]) for a in alerts)
        for pid, alerts in expected["patients"].items()
    }
    assert got == want, expected.get("description")
    for result in results:
        assert [i for i in result.issues if i.severity == "error"] == [], result.issues
        for alert in result.alerts:
            assert alert.evidence, "an alert without evidence"
            assert alert.rationale.endswith(".") and alert.rationale.count(". ") == 0
        if result.alerts:  # what --out writes must be valid FHIR (validated inside)
            bundle = patient_transaction(result.alerts, pipeline.engine.metas)
            assert bundle and bundle["type"] == "transaction"


def test_corpus_covers_every_tier_and_near_misses() -> None:
    seen: set[tuple[str, str]] = set()
    negatives = 0
    for path in CASES:
        for alerts in _expected(path)["patients"].values():
            seen.update((a["rule"], a["severity"]) for a in alerts)
            negatives += not alerts
    for rule in ("cauda_equina_syndrome", "guillain_barre_syndrome"):
        assert {(rule, "critical"), (rule, "urgent")} <= seen
    assert negatives >= 20


@pytest.mark.parametrize("path", EXTERNAL, ids=lambda p: p.name)
def test_third_party_fhir_loads_cleanly_without_alerts(path: Path, pipeline: Pipeline) -> None:
    intake = read_path(path)
    results = pipeline.evaluate(intake, parse_now("2025-03-10T12:00:00Z"))
    assert [i for i in intake.issues if i.severity == "error"] == []
    for result in results:
        assert [i for i in result.issues if i.severity == "error"] == [], result.issues
        assert result.alerts == []


def test_synthea_bundle_is_grouped_under_its_patient(pipeline: Pipeline) -> None:
    path = next(p for p in EXTERNAL if p.name.startswith("synthea-r4.Maida"))
    intake = read_path(path)
    assert list(intake.patients) == ["Patient/3552e945-2598-4993-b617-4133ab2ed914"]
    group = intake.patients["Patient/3552e945-2598-4993-b617-4133ab2ed914"]
    assert sum(e.resource["resourceType"] == "Observation" for e in group.entries) > 50
