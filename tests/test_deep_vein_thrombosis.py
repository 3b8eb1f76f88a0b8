"""deep_vein_thrombosis: Wells total and items, D-dimer cut-offs and units, site parameters, explain."""

from __future__ import annotations

import pytest

from engine.dsl import DAY
from engine.session import Engine
from redflags.pipeline import Pipeline
from rulesets import MODULES

from .engine_helpers import NOW, finding
from .rule_helpers import alert_of, alerts_of, explain_text, with_params

RULE = "deep_vein_thrombosis"


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(MODULES)  # the same configuration as the pipeline's: shares its ruleset


class TestWells:
    def test_every_item_is_counted_once_with_its_points(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierB-wells-every-item")
        assert (alert.tier, alert.severity) == ("B", "urgent")
        # 9 items of +1 and the alternative diagnosis -2 (docs/rules/deep_vein_thrombosis.md)
        assert "Wells score 7 (" in alert.rationale
        for item in (
            "active cancer +1 (Any malignant cancer since 2024-11-20)",
            "paralysis, paresis or leg cast +1 (Leg cast on 2025-03-01 09:00)",
            "bedridden or recent major surgery +1",
            "deep vein tenderness +1",
            "whole leg swollen +1",  # its finding is named once, with the one-sided sign before it
            "calf swelling ≥ 3 cm +1 (Calf circumference difference 4 cm on 2025-03-10 09:05)",
            "pitting oedema +1 (Pitting oedema (right)",
            "collateral superficial veins +1",
            "previous DVT +1 (History of DVT since 2019-05-01)",
            "alternative diagnosis at least as likely -2",
        ):
            assert item in alert.rationale, item
        assert alert.rationale.count("Leg swelling (right) on 2025-03-10 09:00") == 1  # each finding once
        # the card always carries the Wells line, whatever branch fired
        assert alert.notes[0].startswith("Wells score 7 (active cancer +1")

    def test_hip_replacement_procedure_and_calf_difference_make_wells_2(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierB-hip-replacement-calf-swelling-wells-2")
        assert alert.severity == "urgent"
        assert "Wells score 2 (bedridden or recent major surgery +1 (" in alert.rationale
        assert "calf swelling ≥ 3 cm +1 (Calf circumference difference 3.5 cm on 2025-03-10 09:05)" in (
            alert.rationale
        )
        assert "Procedure/dvt-b-v09-hip-replacement" in alert.evidence

    def test_leg_weakness_itself_scores_the_paresis_item(self, pipeline: Pipeline) -> None:
        alerts = alerts_of(pipeline, RULE, "tierB-weak-swollen-leg")
        assert [(a.rule, a.severity) for a in alerts] == [(RULE, "urgent")]
        assert (
            "paralysis, paresis or leg cast +1 (Leg weakness (left) on 2025-03-10 09:00)"
            in alerts[0].rationale
        )
        assert "whole leg swollen +1" in alerts[0].rationale

    def test_no_item_scores_zero(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierC-calf-pain-wells-0")
        assert (alert.tier, alert.severity) == ("C", "routine")
        assert "Wells score 0 (no item recorded)" in alert.rationale
        sign = "Calf pain (left) on 2025-03-10 08:00; no calf pain on the right leg or both"
        assert sign in alert.rationale


class TestDDimer:
    def test_age_adjusted_cut_off_is_age_times_0_01(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierB-ddimer-above-age-adjusted-cutoff")
        assert alert.severity == "urgent"
        cut_off = "D-dimer above the age-adjusted cut-off 0.65 mg/L FEU"
        assert f"{cut_off} (D-dimer (FEU) 0.9 mg/L on 2025-03-10 09:30)" in alert.rationale
        # age 80: cut-off 0.8, so 0.7 mg/L FEU is negative and withdraws tier C
        assert alerts_of(pipeline, RULE, "nearmiss-ddimer-below-age-adjusted-cutoff") == []

    def test_ng_per_ml_is_converted_to_mg_per_l(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "confounder-other-unit-ddimer-ng-per-ml")
        assert (
            "D-dimer above the cut-off 0.5 mg/L FEU (D-dimer (FEU) 0.8 mg/L on 2025-03-10 09:30)"
            in alert.rationale
        )

    def test_ddu_only_meets_the_laboratory_limit(self, pipeline: Pipeline) -> None:
        alert = alert_of(pipeline, RULE, "tierB-ddimer-ddu-above-laboratory-limit")
        assert (
            "D-dimer above the laboratory limit 0.23 mg/L (D-dimer (DDU) 0.4 mg/L on 2025-03-10 09:30)"
            in (alert.rationale)
        )
        unranged = alert_of(pipeline, RULE, "tierC-ddimer-ddu-without-range")
        assert unranged.severity == "routine"  # 0.2 DDU is not read as a negative FEU result
        assert any(
            n.startswith("D-dimer in DDU without a laboratory reference range") for n in unranged.notes
        )
        assert "0.2 mg/L on 2025-03-10 09:30" in unranged.notes[-1]

    def test_laboratory_limit_decides_for_feu_when_sent(self, pipeline: Pipeline) -> None:
        assert alerts_of(pipeline, RULE, "nearmiss-ddimer-negative-by-laboratory-limit") == []

    def test_preliminary_negative_does_not_withdraw_tier_c(self, pipeline: Pipeline) -> None:
        assert alert_of(pipeline, RULE, "tierC-ddimer-negative-preliminary").severity == "routine"


class TestSidesAndOrder:
    @pytest.mark.parametrize("reverse", [False, True])
    def test_left_and_right_records_are_both_legs_whatever_the_order(
        self, engine: Engine, reverse: bool
    ) -> None:
        pid = f"Patient/lr{int(reverse)}"
        facts = [
            finding(pid, "calf_pain", f"Observation/{pid[8:]}-l", days_ago=0.5, side="left"),
            finding(pid, "calf_pain", f"Observation/{pid[8:]}-r", days_ago=0.4, side="right"),
        ]
        both = engine.evaluate(pid, facts[::-1] if reverse else facts, NOW).alerts
        assert [a.rule for a in both if a.rule == RULE] == []
        one = engine.evaluate(pid, facts[:1], NOW).alerts
        assert [(a.rule, a.severity) for a in one if a.rule == RULE] == [(RULE, "routine")]

    def test_swelling_begun_more_than_3_months_ago_is_not_acute(self, engine: Engine) -> None:
        pid = "Patient/chronic"
        old = finding(pid, "leg_swelling", "Condition/old", days_ago=100, side="left", src="Condition")
        today = finding(pid, "leg_swelling", "Observation/today", days_ago=0.1, side="left")
        assert engine.evaluate(pid, [old, today], NOW).alerts == []
        assert engine.evaluate(pid, [dict(old, ts=NOW - 80 * DAY, onset=NOW - 80 * DAY), today], NOW).alerts


class TestSiteParameters:
    def test_overrides_move_the_wells_threshold_and_the_age_adjustment(self) -> None:
        names = ["tierB-hip-replacement-calf-swelling-wells-2", "nearmiss-ddimer-below-age-adjusted-cutoff"]
        site = with_params({RULE: {"wells_likely": 3, "ddimer_age_adjust": 0}}, RULE, names)
        # Wells 2 is "unlikely" when likely starts at 3; without age adjustment 0.7 > 0.5 is positive
        assert site == {names[0]: [[RULE, "routine"]], names[1]: [[RULE, "urgent"]]}


class TestExplain:
    def test_lists_tiers_parameters_value_sets_and_actions(self) -> None:
        text = explain_text(RULE)
        for line in (
            "  - A: critical - ",
            "  - B: urgent - ",
            "  - C: routine - ",
            "  - wells_likely = 2",
            "  - ddimer_cutoff_feu = 0.5",
            "  - ddimer_age_factor = 0.01",
            "  - chronic_days = 90",
            "sums [wells] from its items",
            "blocks tier C when: [dvt_ddimer_negative]",
            "d_dimer_ddu (D-dimer (DDU), in mg/L) <https://redflags.dev/fhir/ValueSet/d_dimer_ddu>: "
            "leg-weakness-finding d_dimer_ddu, loinc.org 48066-5",
            "loinc.org 48065-7",
            "sct 52734007",
            "pitting_edema",
            "rxnorm 1364430",
            "sct 16310003 Diagnostic ultrasonography) [tier B only]",
            "sct 59282003 Pulmonary embolism) [tier A only]",
        ):
            assert line in text, line
        assert "NO VALUE SET" not in text
