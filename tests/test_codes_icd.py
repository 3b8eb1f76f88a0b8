"""ICD-10-CM codes written without their dot (``I639`` for ``I63.9``) mean what the dotted code
means: Bulk Data exports (MIMIC-IV on FHIR, claims data) often drop it (issue 11)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from fhir_adapters import terminology
from fhir_adapters.intake import read_json
from fhir_adapters.terminology import Terminology, normal_code
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from rulesets import VALUESET_DIR
from rulesets.meta import ICD10CM, SNOMED

from .conftest import FIXTURES

ICD10_WHO = "http://hl7.org/fhir/sid/icd-10"
STROKE = FIXTURES / "acute_stroke_or_tia" / "tierA-stroke-condition-onset-6h.json"
OLD_STROKE = FIXTURES / "acute_stroke_or_tia" / "nearmiss-old-stroke-condition-over-30-days.json"
CES = FIXTURES / "cauda_equina_syndrome" / "tierA-new-ces-condition-alone.json"
NOW = "2025-03-10T12:00:00Z"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return terminology.load(VALUESET_DIR)


@pytest.mark.parametrize(
    ("system", "sent", "looked_up"),
    [
        (ICD10CM, "I639", "I63.9"),
        (ICD10CM, "G834", "G83.4"),
        (ICD10CM, "I63512", "I63.512"),
        (ICD10CM, "S72001A", "S72.001A"),  # 7th character
        (ICD10_WHO, "G834", "G83.4"),
        (ICD10CM, "I63.9", "I63.9"),  # already dotted
        (ICD10CM, "G35", "G35"),  # a 3-character category has no dot
        (ICD10CM, "I63..9", "I63..9"),  # garbage is looked up as sent (and matches nothing)
        (ICD10CM, "I63.", "I63."),
        (ICD10CM, "", ""),
        (ICD10CM, "i639", "i639"),  # codes stay case-sensitive (test_terminology: c50.9)
        (ICD10CM, "I63912345", "I63912345"),  # too long for ICD-10
        (ICD10CM, " I639", " I639"),
        (SNOMED, "I639", "I639"),  # other systems are never rewritten
        (SNOMED, "422504002", "422504002"),
    ],
)
def test_the_form_a_code_is_looked_up_in(system: str, sent: str, looked_up: str) -> None:
    assert normal_code(system, sent) == looked_up


@pytest.mark.parametrize(
    ("undotted", "dotted"),
    [("I639", "I63.9"), ("G834", "G83.4"), ("I63512", "I63.512"), ("R29740", "R29.740"), ("I693", "I69.3")],
)
def test_undotted_codes_match_what_the_dotted_match(term: Terminology, undotted: str, dotted: str) -> None:
    """Listed codes and regex filters (stroke_dx ``^I63(\\..*)?$``, NIHSS ``^R29\\.7[0-4][0-9]$``)."""
    assert term.matches(ICD10CM, dotted)
    assert term.matches(ICD10CM, undotted) == term.matches(ICD10CM, dotted)
    assert term.matches(ICD10_WHO, undotted) == term.matches(ICD10_WHO, dotted)


def _as_sent(term: Terminology, system: str, code: str) -> list:
    """The lookup before dotting: listed codes, then regex filters, on the code as sent."""
    listed = list(term.codes.get((system, code), ()))
    return listed + [m for sys, pattern, m in term.patterns if sys == system and pattern.fullmatch(code)]


@pytest.mark.parametrize("code", ["I63..9", "", "I63.", ".I639", "I 639", "G35", "G83..4", "g834"])
def test_other_codes_are_looked_up_as_sent_and_do_not_crash(term: Terminology, code: str) -> None:
    assert term.matches(ICD10CM, code) == _as_sent(term, ICD10CM, code)
    assert term.in_set(term.keys["ces_dx"].url, ICD10CM, code) is False


def test_set_membership_reads_undotted_codes(term: Terminology) -> None:
    url = term.keys["ces_dx"].url
    assert term.in_set(url, ICD10CM, "G83.4")
    assert term.in_set(url, ICD10CM, "G834")


def test_a_site_value_set_written_without_dots_matches_dotted_records(tmp_path: Path) -> None:
    site = {
        "resourceType": "ValueSet",
        "url": "https://site.example/ValueSet/ces-local",
        "status": "active",
        "extension": [{"url": terminology.EXT_KEY, "valueString": "ces_dx"}],
        "compose": {"include": [{"system": ICD10CM, "concept": [{"code": "G8321"}]}]},
    }
    (tmp_path / "ces-local.json").write_bytes(orjson.dumps(site))
    term = terminology.load(VALUESET_DIR, [tmp_path])
    assert {m.key for m in term.matches(ICD10CM, "G83.21")} == {"ces_dx"}
    assert {m.key for m in term.matches(ICD10CM, "G8321")} == {"ces_dx"}


def _recoded(path: Path, code: str) -> bytes:
    """The fixture with every Condition coded by ICD-10-CM ``code`` only."""
    doc = orjson.loads(path.read_bytes())
    for entry in doc["entry"]:
        res = entry["resource"]
        if res["resourceType"] == "Condition":
            res["code"] = {"coding": [{"system": ICD10CM, "code": code}]}
    return orjson.dumps(doc)


def _outcome(pipeline: Pipeline, data: bytes) -> tuple[list, list]:
    intake = read_json(data, "test")
    facts = [
        sorted((f["t"], str(f.get("key")), f.get("onset")) for f in pf.facts) for pf in pipeline.facts(intake)
    ]
    results = pipeline.evaluate(read_json(data, "test"), parse_now(NOW))
    alerts = [(r.pid, sorted((a.rule, a.tier) for a in r.alerts)) for r in results]
    return facts, alerts


@pytest.mark.parametrize(
    ("fixture", "dotted", "undotted", "alerts"),
    [
        (STROKE, "I63.9", "I639", [("acute_stroke_or_tia", "A")]),
        (CES, "G83.4", "G834", [("cauda_equina_syndrome", "A")]),
        (OLD_STROKE, "I63.9", "I639", []),  # the near-miss stays one
    ],
)
def test_a_condition_coded_without_the_dot_gives_the_same_facts_and_alerts(
    pipeline: Pipeline, fixture: Path, dotted: str, undotted: str, alerts: list
) -> None:
    expected = _outcome(pipeline, _recoded(fixture, dotted))
    assert [found for _pid, found in expected[1]] == [alerts]
    assert _outcome(pipeline, _recoded(fixture, undotted)) == expected


def test_garbage_codes_give_no_finding_and_no_error(pipeline: Pipeline) -> None:
    for code in ("G83..4", "G83.", "", "g834", "G8 34"):
        facts, alerts = _outcome(pipeline, _recoded(CES, code))
        assert ("finding", "ces_dx") not in {(t, k) for t, k, _ in facts[0]}
        assert alerts == [("Patient/ces-a-dx", [])]
