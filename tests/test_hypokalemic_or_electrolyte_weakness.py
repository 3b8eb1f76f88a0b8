"""Electrolyte rule (docs/rules/hypokalemic_or_electrolyte_weakness.md): computed values, disorders, notes,
parameters."""

from __future__ import annotations

import orjson
import pytest

from fhir_adapters.intake import read_json
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
from rulesets import hypokalemic_or_electrolyte_weakness as rule

from .lab_rule_helpers import NOW, NOW_ISO, explain_cli, finding, fixture_alerts, lab, only, with_params

RULE = "hypokalemic_or_electrolyte_weakness"
SNOMED = "http://snomed.info/sct"


def alert(pipeline: Pipeline, name: str):
    return only(fixture_alerts(pipeline, RULE, name), RULE)


class TestCalcium:
    def test_corrected_for_albumin(self, pipeline) -> None:
        # 3.4 + 0.02 x (40 - 30) = 3.60 mmol/L
        a = alert(pipeline, "tierA-corrected-calcium-3.6-low-albumin")
        assert (a.tier, a.severity) == ("A", "critical")
        assert "corrected calcium 3.60 mmol/L (Total calcium 3.4 mmol/L on 2025-03-10 08:00" in a.rationale
        assert "Albumin 30 g/L on 2025-03-10 08:00" in a.rationale

    def test_albumin_in_g_dl_is_converted_before_correcting(self, pipeline) -> None:
        # 1.85 + 0.02 x (40 - 3.0 g/dL x 10) = 2.05 mmol/L: tier C, not tier A
        a = alert(pipeline, "tierC-calcium-1.85-corrected-2.05")
        assert (a.tier, a.disorder.code) == ("C", "5291005")
        assert "corrected calcium 2.05 mmol/L" in a.rationale and "Albumin 30 g/L" in a.rationale

    def test_without_albumin_the_total_calcium_is_used_and_said_so(self, pipeline) -> None:
        # 7.2 mg/dL x 0.2495 = 1.7964 mmol/L
        a = alert(pipeline, "tierA-calcium-7.2-mg-dL-no-albumin")
        assert a.tier == "A" and a.disorder.code == "5291005"
        assert "calcium 1.80 mmol/L, not corrected (no albumin)" in a.rationale
        assert "Total calcium 1.7964 mmol/L on 2025-03-10 08:00" in a.rationale

    def test_albumin_more_than_72_h_from_the_calcium_is_not_used(self, pipeline) -> None:
        pid = "Patient/ca-old-albumin"
        facts = [
            lab(pid, "calcium_total", 1.85, "mmol/L", hours_ago=2),
            lab(pid, "albumin", 25, "g/L", hours_ago=2 + 73),
        ]
        (a,) = pipeline.engine.evaluate(pid, facts, NOW).alerts
        assert a.tier == "A" and "not corrected (no albumin)" in a.rationale

    def test_ionised_calcium_decides_hypocalcaemia(self, pipeline) -> None:
        a = alert(pipeline, "tierA-ionised-calcium-0.75")
        assert a.disorder.code == "5291005" and "Ionised calcium 0.75 mmol/L" in a.rationale
        assert fixture_alerts(pipeline, RULE, "nearmiss-low-total-calcium-normal-ionised") == []


@pytest.mark.parametrize(
    ("name", "tier", "code"),
    [
        ("tierA-potassium-2.3-leg-weakness", "A", "43339004"),
        ("tierA-potassium-6.8-not-haemolysed", "A", "14140009"),
        ("tierA-corrected-calcium-3.6-low-albumin", "A", "66931009"),
        ("tierA-periodic-paralysis-attack", "A", "43339004"),
        ("tierB-potassium-6.2-weakness", "B", "14140009"),
        ("tierB-magnesium-1.0-mg-dL-weakness", "B", "190855004"),
        ("tierB-phosphate-0.25-weakness", "B", "4996001"),
        ("tierC-calcium-2.8-weakness", "C", "66931009"),
    ],
)
def test_each_branch_names_its_disorder(pipeline, name, tier, code) -> None:
    a = alert(pipeline, name)
    assert (a.tier, a.disorder.system, a.disorder.code) == (tier, SNOMED, code)


def test_magnesium_in_mg_dl_is_compared_in_mmol_l(pipeline) -> None:
    a = alert(pipeline, "tierB-magnesium-1.0-mg-dL-weakness")
    assert "Magnesium 0.4114 mmol/L on 2025-03-10 08:00" in a.rationale


class TestNotes:
    def test_preliminary_tier_a_result_says_so(self, pipeline) -> None:
        a = alert(pipeline, "tierA-potassium-preliminary")
        assert a.preliminary and a.tier == "A"
        assert a.notes == (
            "preliminary result, confirm on a final sample: "
            "Potassium 2.3 mmol/L (preliminary) on 2025-03-10 08:00",
        )

    def test_haemolysed_potassium_is_noted_when_the_rule_fires_for_another_reason(self, pipeline) -> None:
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {"resourceType": "Patient", "id": "haem"}},
                _observation("w", SNOMED, "26544005", None),
                _observation("mg", "http://loinc.org", "2601-3", 0.4),
                _observation("k", "http://loinc.org", "2823-3", 6.4, note="Haemolysed sample"),
            ],
        }
        (result,) = pipeline.evaluate(read_json(orjson.dumps(bundle), "inline"), parse_now(NOW_ISO))
        a = only(result.alerts, RULE)
        assert (a.tier, a.disorder.code) == ("B", "190855004")  # hypomagnesaemia, not hyperkalaemia
        assert a.notes == (
            "high potassium on a haemolysed sample was not used, repeat the sample: "
            "Potassium 6.4 mmol/L on 2025-03-10 08:00",
        )


def _observation(oid: str, system: str, code: str, value: float | None, note: str | None = None) -> dict:
    res: dict = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/haem"},
        "effectiveDateTime": "2025-03-10T08:00:00Z",
    }
    if value is not None:
        res["valueQuantity"] = {"value": value, "system": "http://unitsofmeasure.org", "code": "mmol/L"}
    if note:
        res["note"] = [{"text": note}]
    return {"resource": res}


def test_weakness_older_than_7_days_does_not_count(pipeline) -> None:
    pid = "Patient/old-weakness"
    k = lab(pid, "potassium", 2.8, "mmol/L")
    recent = pipeline.engine.evaluate(pid, [k, finding(pid, "muscle_weakness_generalized", 6.9)], NOW)
    assert [a.severity for a in recent.alerts] == ["urgent"]
    old = pipeline.engine.evaluate(pid, [k, finding(pid, "muscle_weakness_generalized", 7.1)], NOW)
    assert old.alerts == []


def test_boundaries_are_those_of_the_reference(pipeline) -> None:
    def tier(value: float) -> list[str]:
        pid = f"Patient/k{value:g}"
        facts = [lab(pid, "potassium", value, "mmol/L"), finding(pid, "muscle_weakness_generalized")]
        return [a.tier for a in pipeline.engine.evaluate(pid, facts, NOW).alerts]

    assert [tier(v) for v in (2.49, 2.5, 2.99, 3.0, 3.49, 3.5, 5.99, 6.0, 6.49, 6.5)] == [
        ["A"], ["B"], ["B"], ["C"], ["C"], [], [], ["B"], ["B"], ["A"]
    ]  # fmt: skip


def test_site_parameters_move_the_thresholds() -> None:
    out = with_params(
        {RULE: {"k_critical_low": 2.0, "hemolysed_note": 0, "albumin_reference_g_l": 44}},
        f"""
        print(tiers({RULE!r}, "tierA-potassium-2.2-without-weakness", {RULE!r}))
        print(tiers({RULE!r}, "tierA-potassium-2.3-leg-weakness", {RULE!r}))
        (a,) = alerts({RULE!r}, "tierA-corrected-calcium-3.6-low-albumin")
        print(a.rationale.split(": ", 1)[1])
        """,
    )
    lines = out.splitlines()
    assert lines[0] == "[]"  # K 2.2 is no longer critical, and there is no weakness for tier B
    assert lines[1] == "['urgent']"  # K 2.3 with weakness: tier B now
    assert lines[2].startswith("corrected calcium 3.68 mmol/L")  # 3.4 + 0.02 x (44 - 30)


def test_explain_lists_tiers_parameters_value_sets_and_actions() -> None:
    text = explain_cli(RULE)
    assert "  - A: critical - life-threatening electrolyte value" in text
    assert "  - C: routine - mild electrolyte disturbance with weakness" in text
    for name, value in rule.PARAMS.items():
        assert f"  - {name} = {value:g}" in text
    assert (
        "AND no (latest calcium total within 3 days with a value with latest albumin with a value "
        "within 72 h of the" in text
    )
    potassium = (
        "<https://redflags.dev/fhir/ValueSet/potassium>: leg-weakness-finding potassium, loinc.org 2823-3"
    )
    assert potassium in text
    assert "calcium_ionized (Ionised calcium, in mmol/L)" in text
    assert "rxnorm 8591 Potassium Chloride" in text and "[tier A only]" in text
    assert "[suggests Hypomagnesemia]" in text and "NO VALUE SET" not in text
