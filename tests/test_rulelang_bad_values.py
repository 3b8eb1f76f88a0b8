"""Real-world values that once crashed an evaluation (bad input is normal input in a hospital).

Each case is a FHIR record an EHR can send, evaluated through the whole pipeline: no evaluation
error, and the alerts the rule's page (docs/rules/<id>.md) implies.
"""

from __future__ import annotations

from itertools import count

import orjson
import pytest

from engine.dsl import DAY
from engine.prepare import prepare
from fhir_adapters.identifiers import LATERALITY_EXTENSION
from fhir_adapters.intake import read_json
from fhir_adapters.times import iso, parse_now
from redflags.pipeline import Pipeline
from rulesets.meta import SNOMED

from .engine_helpers import NOW as T_NOW
from .engine_helpers import finding

NOW = "2025-03-10T12:00:00Z"
LEFT, RIGHT = "7771000", "24028007"
HEMIPARESIS = "20022000"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_ids = count(1)


def at(hours_ago: float) -> str:
    return iso(parse_now(NOW) - round(hours_ago * 3600))


def cc(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def sided(side: str) -> list[dict]:
    return [{"extension": [{"url": LATERALITY_EXTENSION, "valueCodeableConcept": cc(SNOMED, side)}]}]


def condition(code: str, side: str, **dates: str) -> dict:
    return {
        "resourceType": "Condition",
        "id": f"c{next(_ids)}",
        "clinicalStatus": cc(CLINICAL, "active"),
        "code": cc(SNOMED, code),
        "bodySite": sided(side),
        **dates,
    }


def evaluate(pipeline: Pipeline, resources: list[dict]) -> dict[str, str]:
    """{rule: tier} of one patient; the evaluation must not fail."""
    pid = f"bv{next(_ids)}"
    entries = [{"resource": {"resourceType": "Patient", "id": pid, "birthDate": "1955-01-01"}}]
    entries += [{"resource": {**r, "subject": {"reference": f"Patient/{pid}"}}} for r in resources]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    (result,) = pipeline.evaluate(read_json(orjson.dumps(bundle), "test"), parse_now(NOW))
    assert [i for i in result.issues if i.severity == "error"] == []
    return {a.rule: a.tier for a in result.alerts}


class TestUndatedRecordBesideADatedOne:
    """engine.prepare: a finding key with a dated record on one side and an undated one on another."""

    def test_the_undated_side_has_no_side_onset_and_the_dated_side_keeps_its_own(self) -> None:
        dated = finding("Patient/p", "hemiparesis", "Condition/l", days_ago=0.1, side="left", src="Condition")
        undated = finding("Patient/p", "hemiparesis", "Condition/r", side="right", src="Condition")
        for name in ("ts", "onset"):
            undated.pop(name)
        got = {f["ref"]: f for f in prepare([dated, undated], T_NOW).facts}
        assert got["Condition/l"]["side_onset_age"] == round(0.1 * DAY)
        assert "side_onset_age" not in got["Condition/r"]  # its onset is unknown
        assert got["Condition/r"]["first_onset_age"] == round(0.1 * DAY)  # the key's earliest

    def test_a_new_deficit_beside_an_undated_one_on_the_other_side_is_a_stroke_alert(
        self, pipeline: Pipeline
    ) -> None:
        """docs/rules/acute_stroke_or_tia.md: a focal deficit begun within 24 h, LKW unknown -> A;
        the undated right hemiparesis (no onset, no recorded date, no encounter) dates nothing."""
        new_left = condition(HEMIPARESIS, LEFT, onsetDateTime=at(2), recordedDate=at(1))
        undated_right = condition(HEMIPARESIS, RIGHT)
        assert evaluate(pipeline, [new_left, undated_right]).get("acute_stroke_or_tia") == "A"
        assert evaluate(pipeline, [undated_right, new_left]).get("acute_stroke_or_tia") == "A"

    def test_an_undated_deficit_alone_raises_no_acute_alert(self, pipeline: Pipeline) -> None:
        assert "acute_stroke_or_tia" not in evaluate(pipeline, [condition(HEMIPARESIS, RIGHT)])

