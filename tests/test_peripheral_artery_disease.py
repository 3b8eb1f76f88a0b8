"""peripheral_artery_disease: ABI per leg, missing and non-compressible ABI, age gate, site parameters."""

from __future__ import annotations

from redflags.pipeline import Pipeline

from .lab_rule_helpers import NOW as LAB_NOW
from .lab_rule_helpers import finding, lab
from .rule_helpers import alert_of, alerts_of, explain_text, with_params

RULE = "peripheral_artery_disease"


class TestAbi:
    def test_lowest_leg_decides_and_the_card_names_value_date_and_age(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierC-claudication-abi-072")
        assert (alert.tier, alert.severity) == ("C", "routine")
        assert alert.rationale.count("Ankle-brachial index") == 1  # left 0.95 is not abnormal
        assert "Ankle-brachial index, right (right) 0.72 on 2025-02-15 09:00" in alert.rationale
        assert (
            "age 67" in alert.rationale
            and "Intermittent claudication (right) since 2024-10-01" in alert.rationale
        )
        assert alert.notes == (
            "PAD risk factor on record: Diabetes since 2012-03-01",
            "PAD risk factor on record: Current smoker on 2025-01-10 09:00",
        )

    def test_missing_abi_fires_and_asks_for_one(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierC-exertional-weakness-abi-missing")
        assert alert.severity == "routine"
        for side in ("left", "right"):
            assert f"no ABI of the {side} leg in the last 24 months" in alert.rationale
        missing = "leg missing (none in the last 24 months): request a resting ABI"
        legs = ("left", "right")
        assert alert.notes == tuple(f"Ankle-brachial index of the {leg} {missing}" for leg in legs)

    def test_abi_older_than_24_months_is_missing_not_normal(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierC-old-abi-counts-as-missing")
        assert "no ABI of the left leg" in alert.rationale and "2023-01-10" not in alert.rationale
        assert alerts_of(pipeline, RULE, "nearmiss-abi-older-than-24-months") == []

    def test_non_compressible_abi_asks_for_a_toe_brachial_index(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierC-abi-noncompressible")
        assert alert.notes == (
            "ABI above 1.4 (non-compressible arteries, unreliable): request a toe-brachial index "
            "(Ankle-brachial index, left (left) 1.55 on 2025-03-03 09:00)",
            "PAD risk factor on record: Diabetes since 2005-03-01",
        )

    def test_severe_abi_is_urgent(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierB-abi-below-040")
        assert (alert.tier, alert.severity) == ("B", "urgent")
        assert "Ankle-brachial index, right (right) 0.35 on 2025-03-04 09:00" in alert.rationale

    def test_abi_boundaries(self, pipeline: Pipeline) -> None:
        assert alerts_of(pipeline, RULE, "nearmiss-abi-normal-both-legs") == []  # 0.91 and 1.40


class TestAgeGate:
    def test_pad_diagnosis_waives_the_age_gate_and_emergencies_have_none(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierC-pad-diagnosis-under-50")
        assert "Peripheral artery disease (left) since 2023-06-01" in alert.rationale
        assert alert_of(pipeline, RULE, "tierA-acute-limb-ischaemia-age-44").severity == "critical"
        assert alerts_of(pipeline, RULE, "nearmiss-age-50-without-pad-diagnosis") == []


class TestCardNotes:
    """Risk factors and neurogenic claudication are card lines: they never change the tier."""

    NEUROGENIC = (
        "neurogenic claudication on record (Neurogenic claudication since 2024-11-05): spinal stenosis "
        "may explain exertional leg symptoms (9.2)"
    )

    def alerts(self, pipeline: Pipeline, pid: str, abi: float, *extra: dict) -> list:
        facts = [
            {"t": "patient", "pid": pid, "ref": pid, "birth": "1955-06-01"},
            finding(pid, "intermittent_claudication", 60, src="Condition"),
            lab(pid, "abi_left", abi, "1", hours_ago=24 * 20, side="left"),
            lab(pid, "abi_right", 1.05, "1", hours_ago=24 * 20, side="right"),
            *extra,
        ]
        return [a for a in pipeline.engine.evaluate(pid, facts, LAB_NOW).alerts if a.rule == RULE]

    def test_neurogenic_claudication_note_only_where_the_rule_still_fires(self, pipeline: Pipeline) -> None:
        pid = "Patient/pad-neuro"
        neurogenic = finding(pid, "neurogenic_claudication", 125, src="Condition")
        (alert,) = self.alerts(pipeline, pid, 0.72, neurogenic)
        assert alert.severity == "routine" and alert.notes == (self.NEUROGENIC,)
        (plain,) = self.alerts(pipeline, pid, 0.72)
        assert plain.notes == ()
        assert self.alerts(pipeline, pid, 1.00, neurogenic) == []  # normal ABI: no alert, no note (9.2)
        assert alerts_of(pipeline, RULE, "nearmiss-neurogenic-claudication-normal-abi") == []
        old = finding(pid, "neurogenic_claudication", 366)  # an Observation (a current Condition is now)
        assert self.alerts(pipeline, pid, 0.72, old)[0].notes == ()  # outside the 12 months

    def test_smoking_record_counts_for_24_months(self, pipeline: Pipeline) -> None:
        pid = "Patient/pad-smoker"
        recent = finding(pid, "smoker", 700)
        (alert,) = self.alerts(pipeline, pid, 0.72, recent)
        assert alert.notes == ("PAD risk factor on record: Current smoker on 2023-04-10 12:00",)
        assert self.alerts(pipeline, pid, 0.72, finding(pid, "smoker", 732))[0].notes == ()

    def test_risk_factors_on_every_tier_stenosis_on_the_routine_one(self, pipeline: Pipeline) -> None:
        pid = "Patient/pad-clti"
        rest_pain = finding(pid, "rest_pain_pad", 10, src="Condition")
        diabetes = finding(pid, "diabetes", 3000, src="Condition")
        neurogenic = finding(pid, "neurogenic_claudication", 125, src="Condition")
        (alert,) = self.alerts(pipeline, pid, 0.72, rest_pain, diabetes, neurogenic)
        assert alert.severity == "urgent"
        assert alert.notes == ("PAD risk factor on record: Diabetes since 2016-12-22",)
        (routine,) = self.alerts(pipeline, pid, 0.72, diabetes)
        assert routine.notes == ("PAD risk factor on record: Diabetes since 2016-12-22",)
        assert self.alerts(pipeline, pid, 1.00, diabetes) == []  # a risk factor raises no alert


class TestSiteParameters:
    def test_overrides_move_the_age_gate_abi_window_and_diagnosis_waiver(self) -> None:
        names = [
            "nearmiss-age-50-without-pad-diagnosis",
            "tierC-pad-diagnosis-under-50",
            "tierC-old-abi-counts-as-missing",
        ]
        site = with_params(
            {RULE: {"age_above": 40, "pad_dx_waives_age": 0, "abi_within_months": 36}}, RULE, names
        )
        assert site == {
            names[0]: [[RULE, "routine"]],  # 50 > 40 now passes the gate
            names[1]: [[RULE, "routine"]],  # 45 > 40: the diagnosis branch keeps the age gate
            names[2]: [],  # the January 2023 ABIs (1.10/1.05) are within 36 months and normal
        }
        strict = with_params({RULE: {"pad_dx_waives_age": 0}}, RULE, names[1:2])
        assert strict == {names[1]: []}  # age 45 with the gate kept for a PAD diagnosis (9.1)


class TestExplain:
    def test_lists_tiers_parameters_value_sets_and_actions(self) -> None:
        text = explain_text(RULE)
        for line in (
            "  - A: critical - acute limb ischaemia",
            "  - B: urgent - ",
            "  - C: routine - ",
            "  - age_above = 50",
            "  - abi_abnormal_max = 0.9",
            "  - abi_noncompressible_above = 1.4",
            "  - abi_severe_below = 0.4",
            "  - abi_within_months = 24",
            "  - pad_dx_waives_age = 1",
            "latest abi left within 730 days ≤ 0.9",
            "intermittent claudication present within 365 days",
            "fires tier A when: new acute limb ischaemia (first onset on that side within 2 weeks)",
            "<https://redflags.dev/fhir/ValueSet/abi_right>",
            "sct 63491006",
            "icd-10-cm I70.213",
            "sct 307777008 Referral to vascular surgeon) [tier A only]",
            "rxnorm 1191 Aspirin",
            "Supervised exercise programme (due within 336 h; ServiceRequest; no code)",
        ):
            assert line in text, line
        assert "8581-1" not in text  # tibial/brachial index is another measure (9.3)
        assert "NO VALUE SET" not in text
