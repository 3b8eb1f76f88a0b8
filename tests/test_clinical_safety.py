"""Adversarial clinical cases (issue 10, item 16), written from docs/clinical-policy.md and the docs/rules/
pages, run from FHIR.

Each case is a small FHIR record that an EHR could send, evaluated through the whole pipeline
(intake, facts, units, engine): free-text values (14.3), two results at the same time (14.2),
thresholds exactly at and either side of each cut-off in every accepted unit (7.1, 15.1), and a
rationale that names each finding once.
"""

from __future__ import annotations

from itertools import count

import orjson
import pytest

from fhir_adapters import terminology
from fhir_adapters.facts import patient_facts
from fhir_adapters.identifiers import LATERALITY_EXTENSION
from fhir_adapters.intake import Entry, PatientGroup, read_json
from fhir_adapters.times import iso, parse_now
from redflags.pipeline import Pipeline
from rulesets import VALUESET_DIR
from rulesets.meta import FINDING_SYSTEM, ICD10CM, LOINC, SNOMED

NOW = "2025-03-10T12:00:00Z"
UCUM = "http://unitsofmeasure.org"
LEFT, RIGHT, BOTH = "7771000", "24028007", "51440002"
_ids = count(1)


def at(hours_ago: float) -> str:
    """A FHIR instant ``hours_ago`` before NOW (minutes precision)."""
    minutes = round(hours_ago * 60)
    return iso(parse_now(NOW) - minutes * 60)


def cc(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


def side_site(side: str) -> dict:
    return {
        **cc(SNOMED, "61685007"),
        "extension": [{"url": LATERALITY_EXTENSION, "valueCodeableConcept": cc(SNOMED, side)}],
    }


def obs(system: str, code: str, hours_ago: float, **extra: object) -> dict:
    return {
        "resourceType": "Observation",
        "id": f"o{next(_ids)}",
        "status": "final",
        "code": cc(system, code),
        "effectiveDateTime": at(hours_ago),
        **extra,
    }


def lab(loinc: str, value: float, unit: str, hours_ago: float = 2, **extra: object) -> dict:
    quantity = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return obs(LOINC, loinc, hours_ago, valueQuantity=quantity, **extra)


def local(key: str, value: float, unit: str, hours_ago: float = 2) -> dict:
    quantity = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return obs(FINDING_SYSTEM, key, hours_ago, valueQuantity=quantity)


def condition(system: str, code: str, days_ago: float, **extra: object) -> dict:
    return {
        "resourceType": "Condition",
        "id": f"c{next(_ids)}",
        "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
        "verificationStatus": cc("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed"),
        "code": cc(system, code),
        "onsetDateTime": at(days_ago * 24),
        **extra,
    }


def weak_legs(hours_ago: float = 3) -> dict:
    """26544005 Muscle weakness of both lower limbs (the "weak" of 7.1, any_leg_weakness)."""
    return obs(SNOMED, "26544005", hours_ago, bodySite=side_site(BOTH))


def evaluate(pipeline: Pipeline, resources: list[dict], birth: str = "1955-01-01") -> list:
    pid = f"p{next(_ids)}"
    entries = [{"resource": {"resourceType": "Patient", "id": pid, "birthDate": birth}}]
    for res in resources:
        entries.append({"resource": {**res, "subject": {"reference": f"Patient/{pid}"}}})
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": entries}
    (result,) = pipeline.evaluate(read_json(orjson.dumps(bundle), "test"), parse_now(NOW))
    assert [i for i in result.issues if i.severity == "error"] == []
    return result.alerts


def tier(pipeline: Pipeline, rule: str, resources: list[dict], birth: str = "1955-01-01") -> str | None:
    found = [a.tier for a in evaluate(pipeline, resources, birth) if a.rule == rule]
    return found[0] if found else None


class TestFreeTextValues:
    """14.3: valueString of a finding: a short list of negations is explicitly absent, other
    text describes the finding (present)."""

    @pytest.mark.parametrize(
        "text", ["absent", "Absent", "  ABSENT ", "not present", "negative", "no", "None", "denied", "denies"]
    )
    def test_a_negation_as_text_raises_no_stroke_alert(self, pipeline: Pipeline, text: str) -> None:
        dysarthria = obs(SNOMED, "8011004", 1, valueString=text)
        assert evaluate(pipeline, [dysarthria]) == []

    @pytest.mark.parametrize("text", ["slurred speech since 10:00", "present", "mild", "not absent"])
    def test_other_text_describes_the_finding(self, pipeline: Pipeline, text: str) -> None:
        dysarthria = obs(SNOMED, "8011004", 1, valueString=text)
        assert tier(pipeline, "acute_stroke_or_tia", [dysarthria]) == "A"

    def test_a_text_negation_newer_than_the_finding_resolves_it(self, pipeline: Pipeline) -> None:
        """A negated record newer than a positive one: the finding has resolved (14.3)."""
        saddle = obs(SNOMED, "449813001", 20)
        gone = obs(SNOMED, "449813001", 2, valueString="none")
        back = condition(SNOMED, "279039007", 3)
        assert tier(pipeline, "cauda_equina_syndrome", [saddle, back]) == "A"
        assert tier(pipeline, "cauda_equina_syndrome", [saddle, gone, back]) is None

    def test_the_text_that_names_a_non_specific_code_is_not_a_negation(self, pipeline: Pipeline) -> None:
        """R29.2 *Abnormal reflex* counts as absent reflexes only through its text (13.1): the word
        "absent" there names the finding, it does not negate it."""
        legs = condition(SNOMED, "26544005", 3, bodySite=[side_site(BOTH)])
        reflexes = obs(ICD10CM, "R29.2", 1, valueString="absent")
        assert tier(pipeline, "guillain_barre_syndrome", [legs, reflexes]) == "B"
        specific = obs(SNOMED, "37280007", 1, valueString="absent")  # *Absent reflex*: absent
        assert tier(pipeline, "guillain_barre_syndrome", [legs, specific]) is None


class TestSameTimeResults:
    """14.2: several results for one key, only the latest by effective time; a tie is decided by
    the later ``issued``, never by the order of the entries."""

    def potassium(self, value: float, issued: str | None) -> dict:
        extra = {"issued": issued} if issued else {}
        return lab("2823-3", value, "mmol/L", hours_ago=3, **extra)

    @pytest.mark.parametrize(
        ("low_issued", "normal_issued", "expected"),
        [
            (at(2.5), at(1), None),  # the normal result was issued later: it is the latest
            (at(1), at(2.5), "A"),  # the critical result was issued later
            (None, None, "A"),  # nothing orders them: both count, the critical one alerts
            (at(2), at(2), "A"),
        ],
    )
    def test_either_entry_order_gives_the_same_result(
        self, pipeline: Pipeline, low_issued, normal_issued, expected
    ) -> None:
        low, normal = self.potassium(2.3, low_issued), self.potassium(4.1, normal_issued)
        rule = "hypokalemic_or_electrolyte_weakness"
        assert tier(pipeline, rule, [low, normal]) == tier(pipeline, rule, [normal, low]) == expected

    def test_a_later_effective_time_wins_whatever_was_issued(self, pipeline: Pipeline) -> None:
        older = lab("2823-3", 2.3, "mmol/L", hours_ago=5, issued=at(0.5))
        newer = lab("2823-3", 4.1, "mmol/L", hours_ago=3, issued=at(2.9))
        rule = "hypokalemic_or_electrolyte_weakness"
        assert tier(pipeline, rule, [older, newer]) == tier(pipeline, rule, [newer, older]) is None


ELECTROLYTE = "hypokalemic_or_electrolyte_weakness"
K, K_BLOOD = "2823-3", "6298-4"
CA_MMOL, CA_MG = "2000-8", "17861-6"
ICA_MMOL, ICA_MG = "1995-0", "17863-2"
MG_MMOL, MG_MG = "2601-3", "19123-9"
P_MMOL, P_MG = "14879-1", "2777-1"

#: (LOINC, value, unit, expected tier with leg weakness). Cut-offs are in mmol/L (7.1); a value
#: in mg/dL or meq/L is converted first (15.1) and the mg/dL figures of 7.1 are rounded labels.
ELECTROLYTE_BOUNDARIES = [
    # potassium: A < 2.5 | B 2.5-<3.0 | C 3.0-<3.5 | none | B 6.0-<6.5 | A >= 6.5
    *[(K, v, "mmol/L", t) for v, t in [(2.49, "A"), (2.5, "B"), (2.51, "B"), (2.99, "B"), (3.0, "C")]],
    *[(K, v, "mmol/L", t) for v, t in [(3.49, "C"), (3.5, None), (5.99, None), (6.0, "B"), (6.49, "B")]],
    *[(K, v, "mmol/L", t) for v, t in [(6.5, "A"), (6.51, "A")]],
    *[
        (K, v, "meq/L", t)
        for v, t in [(2.49, "A"), (2.5, "B"), (3.0, "C"), (3.5, None), (6.0, "B"), (6.5, "A")]
    ],
    *[(K_BLOOD, v, "mmol/L", t) for v, t in [(2.49, "A"), (6.5, "A")]],
    # calcium, no albumin (total used): A < 1.9 | C 1.9-<2.1 | none | C > 2.6-<3.0 | B 3.0-<3.5 | A >= 3.5
    *[(CA_MMOL, v, "mmol/L", t) for v, t in [(1.89, "A"), (1.9, "C"), (2.09, "C"), (2.1, None)]],
    *[(CA_MMOL, v, "mmol/L", t) for v, t in [(2.6, None), (2.61, "C"), (2.99, "C"), (3.0, "B")]],
    *[(CA_MMOL, v, "mmol/L", t) for v, t in [(3.49, "B"), (3.5, "A"), (3.51, "A")]],
    # mg/dL x 0.2495: 14.0 = 3.493 (B, the "14.0" of 7.1 is a label), 14.03 = 3.5005 (A)
    *[(CA_MG, v, "mg/dL", t) for v, t in [(14.0, "B"), (14.02, "B"), (14.03, "A"), (14.1, "A")]],
    *[(CA_MG, v, "mg/dL", t) for v, t in [(7.6, "A"), (7.61, "A"), (7.62, "C"), (8.41, "C"), (8.42, None)]],
    *[(CA_MG, v, "mg/dL", t) for v, t in [(12.0, "C"), (12.02, "C"), (12.03, "B")]],
    # ionised calcium: A < 0.8 mmol/L (mg/dL: 3.2 = 0.7984, 3.21 = 0.8009)
    *[(ICA_MMOL, v, "mmol/L", t) for v, t in [(0.79, "A"), (0.8, None), (0.81, None)]],
    *[(ICA_MG, v, "mg/dL", t) for v, t in [(3.2, "A"), (3.21, None)]],
    # magnesium: B < 0.5 mmol/L (mg/dL x 0.4114: 1.2 = 0.4937 is B although labelled "< 1.2")
    *[(MG_MMOL, v, "mmol/L", t) for v, t in [(0.49, "B"), (0.5, None), (0.51, None)]],
    *[(MG_MG, v, "mg/dL", t) for v, t in [(1.2, "B"), (1.21, "B"), (1.22, None)]],
    *[(MG_MMOL, v, "meq/L", t) for v, t in [(0.99, "B"), (1.0, None)]],  # meq/L x 0.5
    # phosphate: B < 0.32 mmol/L (mg/dL x 0.3229: 0.99 = 0.3197 B, 1.0 = 0.3229 none)
    *[(P_MMOL, v, "mmol/L", t) for v, t in [(0.31, "B"), (0.32, None), (0.33, None)]],
    *[(P_MG, v, "mg/dL", t) for v, t in [(0.99, "B"), (1.0, None)]],
]


@pytest.mark.parametrize(("loinc", "value", "unit", "expected"), ELECTROLYTE_BOUNDARIES)
def test_electrolyte_cut_offs_are_compared_in_mmol_per_litre(
    pipeline: Pipeline, loinc: str, value: float, unit: str, expected: str | None
) -> None:
    assert tier(pipeline, ELECTROLYTE, [weak_legs(), lab(loinc, value, unit)]) == expected


@pytest.mark.parametrize(
    ("calcium", "albumin", "albumin_unit", "expected"),
    [
        (3.3, 30, "g/L", "A"),  # 3.3 + 0.02 x 10 = 3.50 exactly: A (>= 3.5)
        (3.29, 30, "g/L", "B"),  # 3.49
        (3.3, 3.0, "g/dL", "A"),  # albumin 3.0 g/dL = 30 g/L
        (2.1, 50, "g/L", "C"),  # 2.1 + 0.02 x (-10) = 1.90 exactly: C (1.9 <= Ca < 2.1), not A
        (2.09, 50, "g/L", "A"),  # 1.89
    ],
)
def test_corrected_calcium_at_the_cut_off(
    pipeline: Pipeline, calcium: float, albumin: float, albumin_unit: str, expected: str
) -> None:
    resources = [weak_legs(), lab(CA_MMOL, calcium, "mmol/L"), lab("1751-7", albumin, albumin_unit)]
    assert tier(pipeline, ELECTROLYTE, resources) == expected


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (59, "mg/dL", True),
        (60, "mg/dL", False),
        (61, "mg/dL", False),
        (3.3, "mmol/L", True),
        (3.34, "mmol/L", False),
    ],
)
def test_low_glucose_note_at_exactly_60_mg_per_dl(
    pipeline: Pipeline, value: float, unit: str, shown: bool
) -> None:
    """3.1: < 60 mg/dL (3.3 mmol/L). 60 mg/dL is the cut-off itself, not below it."""
    code = "2345-7" if unit == "mg/dL" else "14749-6"
    (alert,) = evaluate(pipeline, [obs(SNOMED, "20022000", 1), lab(code, value, unit, hours_ago=0.5)])
    assert alert.tier == "A"  # never suppressed
    assert any(n.startswith("low glucose") for n in alert.notes) is shown


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (179, "pg/mL", "B"),  # deficient: < 180 pg/mL
        (180, "pg/mL", None),  # indeterminate, no MMA: no alert
        (180, "ng/L", None),  # ng/L = pg/mL
        (132.8, "pmol/L", "B"),  # x 1.355 = 179.94 pg/mL
        (132.9, "pmol/L", None),  # = 180.08 pg/mL: the "133 pmol/L" of 8.1 is a label
        (150, "pmol/L", None),  # = 203 pg/mL: indeterminate (8.2)
    ],
)
def test_b12_cut_off_in_every_unit(pipeline: Pipeline, value: float, unit: str, expected: str | None) -> None:
    numb = obs(SNOMED, "309537005", 24 * 30, bodySite=side_site(BOTH))
    b12 = lab("2132-9", value, unit, hours_ago=24 * 7)
    assert tier(pipeline, "b12_deficiency_neuropathy", [numb, b12]) == expected


@pytest.mark.parametrize(
    ("mma", "unit", "expected"),
    [(0.45, "umol/L", None), (0.46, "umol/L", "B"), (450, "nmol/L", None), (451, "nmol/L", "B")],
)
def test_mma_cut_off_decides_an_indeterminate_b12(
    pipeline: Pipeline, mma: float, unit: str, expected
) -> None:
    numb = obs(SNOMED, "309537005", 24 * 30, bodySite=side_site(BOTH))
    resources = [numb, lab("2132-9", 250, "pg/mL", hours_ago=24 * 7), lab("13964-2", mma, unit, 24 * 7)]
    assert tier(pipeline, "b12_deficiency_neuropathy", resources) == expected


@pytest.mark.parametrize(
    ("volume", "unit", "expected"),
    [(200, "mL", None), (201, "mL", "A"), (0.2, "L", None), (0.201, "L", "A")],
)
def test_post_void_residual_above_200_ml(pipeline: Pipeline, volume: float, unit: str, expected) -> None:
    back = condition(SNOMED, "279039007", 2)
    assert tier(pipeline, "cauda_equina_syndrome", [back, local("pvr_volume", volume, unit)]) == expected


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (0.5, "mg/L", None),  # not above the 0.5 mg/L FEU cut-off: tier C is not raised
        (0.51, "mg/L", "B"),
        (500, "ng/mL", None),
        (501, "ng/mL", "B"),
        (0.5, "ug/mL", None),
    ],
)
def test_d_dimer_cut_off_in_every_unit(pipeline: Pipeline, value: float, unit: str, expected) -> None:
    calf = obs(SNOMED, "300954003", 3, bodySite=side_site(LEFT))  # calf pain on one side, Wells 0
    resources = [calf, lab("48065-7", value, unit, hours_ago=1)]
    assert tier(pipeline, "deep_vein_thrombosis", resources, birth="1985-01-01") == expected


@pytest.mark.parametrize(
    ("before", "after", "unit", "expected"),
    [
        (1.1, 1.4, "mg/dL", "A"),  # rise 0.3 mg/dL = 26.52 umol/L
        (1.1, 1.39, "mg/dL", "B"),
        (101.7, 128.2, "umol/L", "A"),  # rise exactly 26.5 umol/L (float: 128.2 - 26.5 < 101.7)
        (97.2, 123.7, "umol/L", "A"),
        (97.2, 123.6, "umol/L", "B"),
        (80, 120, "umol/L", "A"),  # 1.5 x exactly
        (80, 119.9, "umol/L", "A"),  # rise 39.9 >= 26.5
    ],
)
def test_creatinine_rise_at_the_kdigo_cut_offs(pipeline: Pipeline, before, after, unit, expected) -> None:
    code = "2160-0" if unit == "mg/dL" else "14682-9"
    ck = lab("2157-6", 18_500, "U/L", hours_ago=5, referenceRange=[{"high": {"value": 170, "unit": "U/L"}}])
    resources = [weak_legs(), ck, lab(code, before, unit, hours_ago=30), lab(code, after, unit, hours_ago=5)]
    assert tier(pipeline, "rhabdomyolysis", resources) == expected


@pytest.mark.parametrize(("litres", "expected"), [(1.6, "B"), (1.599, "A"), (1600, "B")])
def test_fvc_per_kg_at_20(pipeline: Pipeline, litres: float, expected: str) -> None:
    """2.1: FVC < 20 mL/kg; 1.6 L / 80 kg is exactly 20 (no red flag); mL or L alike."""
    unit = "mL" if litres > 100 else "L"
    legs = condition(SNOMED, "26544005", 3, bodySite=[side_site(BOTH)])
    reflexes = obs(SNOMED, "37280007", 10, bodySite=side_site(BOTH))
    resources = [legs, reflexes, lab("19870-5", litres, unit, 1), lab("29463-7", 80, "kg", 1)]
    assert tier(pipeline, "guillain_barre_syndrome", resources) == expected


@pytest.mark.parametrize(
    ("abi", "expected"),
    [(0.9, "C"), (0.91, None), (1.4, None), (1.41, "C"), (0.4, "C"), (0.39, "B")],
)
def test_abi_cut_offs(pipeline: Pipeline, abi: float, expected: str | None) -> None:
    """9.1: ABI <= 0.90 abnormal, > 1.40 non-compressible (routine); < 0.40 severe (urgent)."""
    claudication = condition(SNOMED, "63491006", 60)
    resources = [claudication, local("abi_left", abi, "1", 24 * 30), local("abi_right", 1.1, "1", 24 * 30)]
    assert tier(pipeline, "peripheral_artery_disease", resources) == expected


class TestRationale:
    def test_each_finding_once(self, pipeline: Pipeline) -> None:
        """The issue's example: bilateral sciatica (a derived fact naming both records) and the
        sciatica on its own named the same finding twice."""
        resources = [
            condition(ICD10CM, "M54.32", 12),
            condition(ICD10CM, "M54.31", 10),
            condition(SNOMED, "279039007", 8),
        ]
        (alert,) = evaluate(pipeline, resources)
        assert alert.rule == "cauda_equina_syndrome" and alert.tier == "B"
        for finding in ("Sciatica (left) since", "Sciatica (right) since", "Back pain since"):
            assert alert.rationale.count(finding) == 1, alert.rationale


PARESIS_LEFT, PARESIS_RIGHT = "16018391000119104", "16018431000119109"  # pre-coordinated sides


def resolved(res: dict) -> dict:
    return {
        **res,
        "clinicalStatus": cc("http://terminology.hl7.org/CodeSystem/condition-clinical", "resolved"),
    }


class TestAnOldFindingOnOneSideHidesNoNewOneOnTheOther:
    """The "history silences a new event" audit: ``new`` and "begun within" of a finding with a
    side read that side's own earliest record (as 3.3 defines a stable deficit), so an old
    weakness, swelling or ischaemia of one leg does not make the other leg's new one old."""

    def test_cord_compression_new_weakness_of_the_other_leg(self, pipeline: Pipeline) -> None:
        base = [condition(ICD10CM, "C79.51", 365), condition(SNOMED, "279039007", 3)]
        old_right = condition(SNOMED, PARESIS_RIGHT, 700)
        new_left = condition(SNOMED, PARESIS_LEFT, 3)
        assert tier(pipeline, "spinal_cord_compression", [*base, old_right]) == "B"  # no new deficit
        assert tier(pipeline, "spinal_cord_compression", [*base, old_right, new_left]) == "A"
        again_right = condition(SNOMED, PARESIS_RIGHT, 3)  # the old one re-recorded: not new
        assert tier(pipeline, "spinal_cord_compression", [*base, old_right, again_right]) == "B"

    def test_myasthenia_new_weakness_of_the_other_leg(self, pipeline: Pipeline) -> None:
        base = [condition(SNOMED, "91637004", 2000), condition(SNOMED, PARESIS_LEFT, 365)]
        assert tier(pipeline, "myasthenic_crisis_risk", base) is None
        assert tier(pipeline, "myasthenic_crisis_risk", [*base, condition(SNOMED, PARESIS_RIGHT, 3)]) == "B"

    def test_dvt_new_swelling_of_the_other_leg(self, pipeline: Pipeline) -> None:
        chronic_right = condition(SNOMED, "102572006", 365, bodySite=[side_site(RIGHT)])
        new_left = obs(SNOMED, "102572006", 20, bodySite=side_site(LEFT))
        rule = "deep_vein_thrombosis"
        assert tier(pipeline, rule, [chronic_right], birth="1985-01-01") is None  # not acute (5.3)
        assert tier(pipeline, rule, [chronic_right, new_left], birth="1985-01-01") == "C"
        assert tier(pipeline, rule, [new_left, chronic_right], birth="1985-01-01") == "C"

    def test_acute_limb_ischaemia_of_the_other_leg(self, pipeline: Pipeline) -> None:
        old_left = resolved(
            condition(FINDING_SYSTEM, "acute_limb_ischaemia", 365, bodySite=[side_site(LEFT)])
        )
        new_right = obs(FINDING_SYSTEM, "acute_limb_ischaemia", 2, bodySite=side_site(RIGHT))
        assert tier(pipeline, "peripheral_artery_disease", [old_left, new_right]) == "A"
        again_left = obs(FINDING_SYSTEM, "acute_limb_ischaemia", 2, bodySite=side_site(LEFT))
        assert tier(pipeline, "peripheral_artery_disease", [old_left, again_left]) is None

    def test_gbs_new_weakness_of_both_legs_beside_an_old_foot_drop(self, pipeline: Pipeline) -> None:
        old_left = condition(SNOMED, PARESIS_LEFT, 700)
        both = obs(SNOMED, "26544005", 24 * 5, bodySite=side_site(BOTH))
        reflexes = obs(SNOMED, "37280007", 10, bodySite=side_site(BOTH))
        assert tier(pipeline, "guillain_barre_syndrome", [both, reflexes]) == "B"
        assert tier(pipeline, "guillain_barre_syndrome", [old_left, both, reflexes]) == "B"
        assert tier(pipeline, "guillain_barre_syndrome", [both, old_left, reflexes]) == "B"
        chronic = obs(SNOMED, "26544005", 24 * 90, bodySite=side_site(BOTH))  # slowly, over months
        assert tier(pipeline, "guillain_barre_syndrome", [chronic, both, reflexes]) is None


class TestTimeSources:
    """14.4: a Condition exported without any date of its own (an encounter diagnosis, as in
    MIMIC-IV on FHIR) takes its Encounter's period: onset = start, evidence = end.

    Read at the facts level here; ``tests/test_codes_encounter.py`` takes the same path from
    bundles and NDJSON through intake."""

    def facts(self, start_hours_ago: float, end_hours_ago: float | None, **own: str) -> dict:
        period = {"start": at(start_hours_ago)} | ({"end": at(end_hours_ago)} if end_hours_ago else {})
        encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished", "period": period}
        ces = condition(ICD10CM, "G83.4", 0, encounter={"reference": "Encounter/e1"})
        del ces["onsetDateTime"]
        ces.update(own)
        group = PatientGroup("Patient/p", [Entry("e", encounter), Entry("c", ces)])
        (fact,) = patient_facts(group, terminology.load(VALUESET_DIR)).facts
        return fact

    def test_an_undated_diagnosis_takes_its_encounter_period(self) -> None:
        fact = self.facts(72, 48)
        assert (fact["key"], fact["onset"], fact["ts"]) == ("ces_dx", parse_now(at(72)), parse_now(at(48)))
        fact = self.facts(72, None)
        assert (fact["onset"], fact["ts"]) == (parse_now(at(72)), parse_now(at(72)))

    def test_a_new_cauda_equina_diagnosis_dated_by_its_encounter(self, pipeline: Pipeline) -> None:
        alerts = pipeline.engine.evaluate("Patient/p", [self.facts(72, 48)], parse_now(NOW)).alerts
        assert [(a.rule, a.tier) for a in alerts] == [("cauda_equina_syndrome", "A")]
        old = pipeline.engine.evaluate("Patient/p", [self.facts(24 * 30, 24 * 28)], parse_now(NOW)).alerts
        assert old == []  # not new (1.1)

    def test_its_own_dates_win_over_the_encounter(self) -> None:
        fact = self.facts(72, 48, onsetDateTime=at(24 * 40))
        assert fact["onset"] == parse_now(at(24 * 40))


def test_a_finding_cited_by_another_criterion_is_shown_there_in_either_order() -> None:
    """The engine's match order must not decide whether a Wells item keeps its finding."""
    from engine.describe import findings_once

    finding = "Calf circumference difference 3.5 cm on 2025-03-10 09:05"
    wells = f"Wells score 2 (bedridden +1 (Bedridden on 2025-02-28); calf swelling ≥ 3 cm +1 ({finding}))"
    for order in ([finding, wells], [wells, finding]):
        assert findings_once(order) == [wells]
