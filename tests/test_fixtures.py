"""Replay the whole fixture corpus and compare with the expected alerts beside each file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_adapters.intake import read_path
from fhir_adapters.output import patient_transaction
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from redflags.replay.corpus import Expectation, Report, load_expectation, replay_expected
from redflags.replay.per_file import expand

from .conftest import FIXTURES

CASES = sorted(p for p in expand([FIXTURES]) if "external" not in p.parts)
EXTERNAL = sorted(expand([FIXTURES / "external" / "fhir-r4"]))  # external/cds-hooks: not FHIR data


def _expected(path: Path) -> Expectation:
    expectation = load_expectation(path)
    assert expectation is not None, f"{path}: no expected file"
    return expectation


def test_every_fixture_has_its_expectation() -> None:
    assert len(CASES) >= 40
    for path in CASES:
        assert _expected(path).patients, path


@pytest.mark.parametrize("path", CASES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_fixture_alerts_match_expected(path: Path, pipeline: Pipeline) -> None:
    """The same comparison as `redflags replay --expect`; a failure prints its miss lines."""
    (checked,) = replay_expected([path], pipeline, default_now=0)
    report = Report()
    report.add(checked)
    description = checked.expectation.description if checked.expectation else "no expected file"
    assert checked.expectation and report.ok, "\n".join([description, *report.lines()])
    for result in checked.result.patients:
        for alert in result.alerts:
            assert alert.evidence, "an alert without evidence"
            assert alert.rationale.endswith(".") and alert.rationale.count(". ") == 0
        if result.alerts:  # what --out writes must be valid FHIR (validated inside)
            bundle = patient_transaction(result.alerts, pipeline.engine.metas)
            assert bundle and bundle["type"] == "transaction"


def test_corpus_covers_every_tier_of_every_rule_and_near_misses(pipeline: Pipeline) -> None:
    seen: set[tuple[str, str]] = set()
    negatives = 0
    for path in CASES:
        for alerts in _expected(path).patients.values():
            seen.update(alerts.items())
            negatives += not alerts
    tiers = {(meta.id, tier.severity) for meta in pipeline.engine.metas.values() for tier in meta.tiers}
    assert tiers - seen == set()
    assert negatives >= 100


def test_third_party_examples_have_expectations_too() -> None:
    for path in EXTERNAL:
        assert load_expectation(path) is not None, path


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


def test_walking_fixtures_skips_the_cds_hooks_payloads() -> None:
    """`redflags replay fixtures` must not read CDS Hooks requests as FHIR (they are not)."""
    cds = FIXTURES / "external" / "cds-hooks"
    assert len(list(cds.glob("*.json"))) >= 10
    assert not any("cds-hooks" in p.parts for p in expand([FIXTURES]))
    named = cds / "card-response-empty.spec-2.0.1.json"
    assert list(expand([named])) == [named]
