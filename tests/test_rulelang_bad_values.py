"""Real-world values that once crashed an evaluation (bad input is normal input in a hospital).

Each case is a FHIR record an EHR can send, evaluated through the whole pipeline: no evaluation
error, and the alerts the rule's page (docs/rules/<id>.md) implies.
"""

from __future__ import annotations

from itertools import count

import orjson

from engine.alert import Alert
from engine.dsl import DAY
from engine.prepare import prepare
from fhir_adapters.identifiers import LATERALITY_EXTENSION
from fhir_adapters.intake import read_json
from fhir_adapters.times import iso, parse_now
from redflags.pipeline import Pipeline
from rulesets.meta import SNOMED

from .conftest import FIXTURES
from .engine_helpers import NOW as T_NOW
from .engine_helpers import finding

NOW = "2025-03-10T12:00:00Z"
LEFT, RIGHT = "7771000", "24028007"
HEMIPARESIS = "20022000"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
UCUM = "http://unitsofmeasure.org"
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
    return {a.rule: a.tier for a in evaluate_alerts(pipeline, resources)}


def evaluate_alerts(pipeline: Pipeline, resources: list[dict]) -> list[Alert]:
    """The alerts of one patient made of ``resources``; the evaluation must not fail."""
    pid = f"bv{next(_ids)}"
    entries = [{"resource": {"resourceType": "Patient", "id": pid, "birthDate": "1955-01-01"}}]
    entries += [{"resource": {**r, "subject": {"reference": f"Patient/{pid}"}}} for r in resources]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    (result,) = pipeline.evaluate(read_json(orjson.dumps(bundle), "test"), parse_now(NOW))
    assert [i for i in result.issues if i.severity == "error"] == []
    return result.alerts


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


def fixture(rule: str, name: str) -> list[dict]:
    """The resources (Patient excepted) of ``fixtures/<rule>/<name>.json``."""
    bundle = orjson.loads((FIXTURES / rule / f"{name}.json").read_bytes())
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]


def changed(resources: list[dict], **by_id: dict | None) -> list[dict]:
    """The resources with some replaced (``None``: left out), by id suffix."""
    out = []
    for res in resources:
        key = next((k for k in by_id if res["id"].endswith(k.replace("_", "-"))), None)
        if key is None:
            out.append(res)
        elif by_id[key] is not None:
            out.append({k: v for k, v in {**res, **by_id[key]}.items() if v is not None})
    return out


def litres(v: float) -> dict:
    return {"valueQuantity": {"value": v, "unit": "L", "system": UCUM, "code": "L"}}


def umol(v: float) -> dict:
    return {"valueQuantity": {"value": v, "unit": "umol/L", "system": UCUM, "code": "umol/L"}}


FLAGGED_ONLY = {"valueQuantity": None, "interpretation": [{"coding": [{"system": INTERP, "code": "H"}]}]}


class TestValueCalculations:
    """Values a derivation once divided by or read without a number (RuleActionError)."""

    def test_gbs_a_first_fvc_of_0_is_no_base_for_a_fall(self, pipeline: Pipeline) -> None:
        """docs/rules/guillain_barre_syndrome.md: the fall is measured from the episode's first FVC;
        a first FVC of 0 measures nothing. Without a weight (no FVC per kg) the core criteria
        alone give tier B."""
        gbs = fixture("guillain_barre_syndrome", "tierA-fvc-fell-30-percent-from-first")
        zero = changed(gbs, fvc_0305=litres(0), fvc_0308=None, fvc_0310=litres(0), weight=None)
        assert evaluate(pipeline, zero)["guillain_barre_syndrome"] == "B"
        kept = changed(gbs, fvc_0305=litres(3.6), weight=None)  # the fixture itself: the fall counts
        assert evaluate(pipeline, kept)["guillain_barre_syndrome"] == "A"

    def test_rhabdo_an_earlier_creatinine_of_0_is_no_baseline(self, pipeline: Pipeline) -> None:
        """docs/rules/rhabdomyolysis.md: AKI is a rise from an earlier creatinine; 0 is no
        measurement, so CK 9,500 U/L with myalgia stays tier B."""
        rhabdo = fixture("rhabdomyolysis", "tierA-creatinine-1.6x-in-7-days")
        assert evaluate(pipeline, changed(rhabdo, creat_1=umol(0)))["rhabdomyolysis"] == "B"
        recent = changed(rhabdo, creat_1={**umol(0), "effectiveDateTime": at(20)})  # the 48 h rise too
        assert evaluate(pipeline, recent)["rhabdomyolysis"] == "B"
        assert evaluate(pipeline, rhabdo)["rhabdomyolysis"] == "A"

    def test_electrolytes_a_calcium_without_a_number_is_not_corrected(self, pipeline: Pipeline) -> None:
        """docs/rules/hypokalemic_or_electrolyte_weakness.md: corrected calcium needs a calcium
        value; a result flagged H without a number raises no calcium branch."""
        lyte = fixture("hypokalemic_or_electrolyte_weakness", "tierA-corrected-calcium-3.6-low-albumin")
        got = evaluate(pipeline, changed(lyte, ca=FLAGGED_ONLY))
        assert "hypokalemic_or_electrolyte_weakness" not in got

    def test_electrolytes_an_albumin_without_a_number_is_missing(self, pipeline: Pipeline) -> None:
        """An albumin without a number cannot correct: the total calcium is used (7.1 "if albumin
        missing use total Ca"): 3.6 mmol/L is tier A on its own."""
        lyte = fixture("hypokalemic_or_electrolyte_weakness", "tierA-corrected-calcium-3.6-low-albumin")
        ca = {"valueQuantity": {"value": 3.6, "unit": "mmol/L", "system": UCUM, "code": "mmol/L"}}
        got = evaluate(pipeline, changed(lyte, ca=ca, alb=FLAGGED_ONLY))
        assert got["hypokalemic_or_electrolyte_weakness"] == "A"
