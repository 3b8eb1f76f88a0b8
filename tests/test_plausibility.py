"""Physiologically impossible values and haemolysed samples (docs/clinical-policy.md#plausibility)."""

from __future__ import annotations

import pytest

from fhir_adapters import plausibility, terminology
from fhir_adapters.terminology import Terminology
from rulesets import VALUESET_DIR
from rulesets.meta import LOINC, SNOMED

from .facts_helpers import cc, observation, one, quantity, run

V2_0493 = "http://terminology.hl7.org/CodeSystem/v2-0493"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


@pytest.fixture(scope="module")
def term() -> Terminology:
    return terminology.load(VALUESET_DIR)


def potassium(value: float, unit: str = "mmol/L", **extra) -> dict:
    return observation(LOINC, "2823-3", valueQuantity=quantity(value, unit), **extra)


class TestBounds:
    @pytest.mark.parametrize(
        ("key", "value", "expected"),
        [
            ("potassium", 0.99, (1.0, 10.0)),
            ("potassium", 1.0, None),
            ("potassium", 10.0, None),
            ("potassium", 10.01, (1.0, 10.0)),
            ("calcium_total", 0.49, (0.5, 6.0)),
            ("calcium_total", 6.0, None),
            ("calcium_ionized", 6.2, (0.5, 6.0)),
            ("magnesium", 50.0, None),  # no bounds: never rejected here
        ],
    )
    def test_bounds_are_inclusive_and_per_key(self, key, value, expected) -> None:
        assert plausibility.outside(key, value) == expected


class TestFacts:
    def test_impossible_potassium_is_missing_with_a_data_quality_warning(self, term) -> None:
        result = run(term, potassium(12.0))
        assert [f for f in result.facts if f.get("key") == "potassium"] == []
        (issue,) = result.issues
        assert issue.severity == "warning" and issue.path == "Bundle.entry[0].resource.valueQuantity"
        assert "potassium 12 mmol/L" in issue.message and "1-10 mmol/L" in issue.message

    def test_bounds_apply_after_unit_conversion(self, term) -> None:
        # 25 mg/dL x 0.2495 = 6.24 mmol/L: impossible; 12 mg/dL = 2.99 mmol/L is kept.
        high = observation(LOINC, "17861-6", valueQuantity=quantity(25, "mg/dL"))
        assert [f for f in run(term, high).facts if f.get("key") == "calcium_total"] == []
        fine = observation(LOINC, "17861-6", valueQuantity=quantity(12, "mg/dL"))
        assert one(run(term, fine), "calcium_total")["v"] == pytest.approx(2.994)

    def test_possible_values_carry_no_issue(self, term) -> None:
        result = run(term, potassium(6.8))
        assert one(result, "potassium")["v"] == 6.8 and result.issues == []


class TestHaemolysis:
    def test_unmarked_sample_is_not_haemolysed(self, term) -> None:
        assert one(run(term, potassium(6.2)), "potassium")["hemolysed"] == 0

    @pytest.mark.parametrize(
        "extra",
        [
            {"note": [{"text": "Sample haemolysed, please repeat"}]},
            {"note": [{"text": "HEMOLYZED specimen"}]},
            {"interpretation": [{"text": "Hemolysis present"}]},
            {
                "interpretation": [
                    {"coding": [{"system": INTERPRETATION, "code": "H", "display": "Haemolysed"}]}
                ]
            },
            {"specimen": {"display": "Serum (haemolysed)"}},
        ],
        ids=[
            "note-haemolysed",
            "note-hemolyzed",
            "interpretation-text",
            "interpretation-display",
            "specimen",
        ],
    )
    def test_marked_in_note_interpretation_or_specimen(self, term, extra) -> None:
        assert one(run(term, potassium(6.2, **extra)), "potassium")["hemolysed"] == 1

    def test_contained_specimen_condition_hem(self, term) -> None:
        specimen = {"resourceType": "Specimen", "id": "s1", "condition": [cc(V2_0493, "HEM")]}
        res = potassium(6.2, contained=[specimen], specimen={"reference": "#s1"})
        assert one(run(term, res), "potassium")["hemolysed"] == 1

    def test_contained_specimen_of_another_reference_does_not_count(self, term) -> None:
        specimen = {"resourceType": "Specimen", "id": "s2", "condition": [cc(V2_0493, "HEM")]}
        res = potassium(6.2, contained=[specimen], specimen={"reference": "#s1"})
        assert one(run(term, res), "potassium")["hemolysed"] == 0

    @pytest.mark.parametrize("text", ["Sample not haemolysed", "non-hemolyzed sample", "no haemolysis seen"])
    def test_negated_mentions_do_not_count(self, term, text) -> None:
        res = potassium(6.2, note=[{"text": text}])
        assert one(run(term, res), "potassium")["hemolysed"] == 0

    def test_finding_facts_carry_no_flag(self, term) -> None:
        res = observation(SNOMED, "449813001", note=[{"text": "haemolysed"}])
        assert "hemolysed" not in one(run(term, res), "saddle_anesthesia")
