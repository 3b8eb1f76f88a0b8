"""acute_stroke_or_tia (docs/rules/acute_stroke_or_tia.md): what the fixture corpus cannot show compactly."""

from __future__ import annotations

import pytest

from engine.dsl import HOUR
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline

from .cli_helpers import run
from .conftest import FIXTURES
from .engine_helpers import NOW, finding, isolated, value

RULE = "acute_stroke_or_tia"
FOLDER = FIXTURES / RULE
THROMBOLYSIS = "within 4.5 h of LKW (thrombolysis window)"
THROMBECTOMY = "within 24 h (thrombectomy window, selected patients)"


def alert(pipeline: Pipeline, name: str):
    (result,) = pipeline.evaluate(read_path(FOLDER / f"{name}.json"), parse_now("2025-03-10T12:00:00Z"))
    (only,) = result.alerts
    return only


def deficit(pid: str, key: str, hours_ago: float, side: str = "left", **extra) -> dict:
    return finding(pid, key, f"Observation/{key}-{hours_ago}", hours_ago / 24, side) | extra


def lkw(pid: str, hours_ago: float, recorded_hours_ago: float = 0.5) -> dict:
    fact = value(pid, "lkw_time", 0, "Observation/lkw", recorded_hours_ago, unit="s")
    return fact | {"v": int(NOW - hours_ago * HOUR)}


def evaluate(pipeline: Pipeline, pid: str, facts: list[dict]):
    return pipeline.engine.evaluate(pid, facts, NOW).alerts


def tiers(pipeline: Pipeline, pid: str, facts: list[dict]) -> list[tuple[str, str]]:
    return [(a.rule, a.tier) for a in evaluate(pipeline, pid, facts)]


class TestLastKnownWell:
    def test_hours_since_lkw_are_computed_and_named(self, pipeline: Pipeline) -> None:
        found = alert(pipeline, "tierA-lkw-2h-face-and-arm-thrombolysis-window")
        assert (found.tier, found.severity) == ("A", "critical")
        assert "last known well 2.2 h ago (Time last known well 2025-03-10 09:45)" in found.rationale
        assert "Facial weakness (left) on 2025-03-10 10:30" in found.rationale
        assert found.notes == (THROMBOLYSIS, THROMBECTOMY)
        late = alert(pipeline, "tierA-lkw-10h-wake-up-hemiparesis")
        assert "last known well 10.0 h ago (Time last known well 2025-03-10 02:00)" in late.rationale
        assert late.notes == (THROMBECTOMY,)

    @pytest.mark.parametrize(
        ("hours", "expected"),
        [(4.5, "A"), (23.9, "A"), (24.1, "B"), (7 * 24, "B"), (7 * 24 + 1, None)],
    )
    def test_tier_follows_the_time_since_lkw(self, pipeline: Pipeline, hours: float, expected) -> None:
        pid = f"Patient/lkw{hours}"
        facts = [lkw(pid, hours), deficit(pid, "speech_disturbance", 0.5, side="unknown")]
        assert tiers(pipeline, pid, facts) == ([(RULE, expected)] if expected else [])

    def test_thrombolysis_tag_stops_at_4_5_h(self, pipeline: Pipeline) -> None:
        pid = "Patient/tag"
        inside = evaluate(pipeline, pid, [lkw(pid, 4.4), deficit(pid, "hemiparesis", 1)])[0]
        outside = evaluate(pipeline, pid, [lkw(pid, 4.6), deficit(pid, "hemiparesis", 1)])[0]
        assert THROMBOLYSIS in inside.notes and THROMBOLYSIS not in outside.notes
        assert THROMBECTOMY in outside.notes

    def test_an_lkw_recorded_for_another_episode_is_not_used(self, pipeline: Pipeline) -> None:
        pid = "Patient/old-lkw"
        old = lkw(pid, 60 * 24, recorded_hours_ago=60 * 24)  # recorded two months ago
        found = evaluate(pipeline, pid, [old, deficit(pid, "facial_weakness", 2)])
        assert [(a.rule, a.tier) for a in found] == [(RULE, "A")]
        assert "LKW not recorded: taken from the first deficit record; confirm it before thrombolysis" in (
            found[0].notes
        )

    def test_site_override_moves_the_tier_a_limit(self) -> None:
        out = isolated("""
            from tests.test_acute_stroke_or_tia import deficit, lkw
            site = Engine(MODULES, params={"acute_stroke_or_tia": {"acute_h": 6}})
            for hours in (5, 10):
                pid = f"Patient/h{hours}"
                facts = [lkw(pid, hours), deficit(pid, "hemiparesis", 1)]
                print(hours, [(a.rule, a.tier) for a in site.evaluate(pid, facts, NOW).alerts])
        """)
        assert out.splitlines() == ["5 [('acute_stroke_or_tia', 'A')]", "10 [('acute_stroke_or_tia', 'B')]"]


class TestUnknownLkw:
    def test_earliest_deficit_sets_lkw(self, pipeline: Pipeline) -> None:
        pid = "Patient/two"
        recent_and_older = [deficit(pid, "facial_weakness", 2), deficit(pid, "arm_weakness", 30)]
        assert tiers(pipeline, pid, recent_and_older) == [(RULE, "B")]

    def test_no_thrombolysis_tag_when_any_deficit_is_older_than_4_5_h(self, pipeline: Pipeline) -> None:
        pid = "Patient/tags"
        (both,) = evaluate(
            pipeline, pid, [deficit(pid, "facial_weakness", 2), deficit(pid, "arm_weakness", 6)]
        )
        assert both.tier == "A" and THROMBOLYSIS not in both.notes and THROMBECTOMY in both.notes
        (one,) = evaluate(pipeline, pid, [deficit(pid, "facial_weakness", 2)])
        assert THROMBOLYSIS in one.notes


def old_stroke(pid: str, kind: str) -> dict:
    """Stroke history: sequelae coded since 2022, or a stroke Condition that began 400 days ago."""
    if kind == "sequela":
        return finding(pid, "stroke_sequela", "Condition/seq", 900, src="Condition")
    return finding(pid, "stroke_dx", "Condition/old", 400, src="Condition")


class TestOldStroke:
    """3.3: a history of stroke silences only a STABLE deficit (same key and side recorded more
    than 7 days before now); a new deficit is judged by 3.1 as in any other patient."""

    @pytest.mark.parametrize("history", ["sequela", "old stroke"])
    @pytest.mark.parametrize("key", ["hemiparesis", "speech_disturbance", "facial_weakness"])
    def test_new_deficit_without_lkw_falls_back_to_its_first_record(
        self, pipeline: Pipeline, history: str, key: str
    ) -> None:
        pid = f"Patient/recurrent-{key}-{history}"
        past = old_stroke(pid, history)
        new = deficit(pid, key, 1)
        assert tiers(pipeline, pid, [past, new]) == tiers(pipeline, pid, [new, past]) == [(RULE, "A")]
        (found,) = evaluate(pipeline, pid, [past, new])
        assert THROMBOLYSIS in found.notes and any(
            n.startswith("previous stroke on record") for n in found.notes
        )
        later = deficit(pid, key, 30)  # begun 30 h ago, still no LKW: tier B as in any patient
        assert tiers(pipeline, pid, [past, later]) == [(RULE, "B")]

    def test_recorded_lkw_still_decides_in_a_patient_with_an_old_stroke(self, pipeline: Pipeline) -> None:
        pid = "Patient/recurrent-lkw"
        new_event = [old_stroke(pid, "sequela"), lkw(pid, 1.5), deficit(pid, "facial_weakness", 1)]
        assert tiers(pipeline, pid, new_event) == [(RULE, "A")]

    def test_a_stable_deficit_is_silenced_with_or_without_stroke_history(self, pipeline: Pipeline) -> None:
        pid = "Patient/stable"
        chronic = [deficit(pid, "hemiparesis", 60 * 24), deficit(pid, "hemiparesis", 1)]  # left, both
        assert tiers(pipeline, pid, chronic) == []
        assert tiers(pipeline, pid, [old_stroke(pid, "sequela"), *chronic]) == []
        # recorded 8 days ago is stable; 6 days ago is not (begun within 7 days: tier B)
        assert (
            tiers(pipeline, pid, [deficit(pid, "hemiparesis", 8 * 24), deficit(pid, "hemiparesis", 1)]) == []
        )
        six = [deficit(pid, "hemiparesis", 6 * 24), deficit(pid, "hemiparesis", 1)]
        assert tiers(pipeline, pid, six) == [(RULE, "B")]

    def test_a_new_deficit_on_the_other_side_is_not_the_stable_one(self, pipeline: Pipeline) -> None:
        pid = "Patient/other-side"
        old_left = [old_stroke(pid, "sequela"), deficit(pid, "hemiparesis", 300 * 24, side="left")]
        new_right = deficit(pid, "hemiparesis", 2, side="right")
        assert tiers(pipeline, pid, [*old_left, new_right]) == [(RULE, "A")]
        assert tiers(pipeline, pid, [new_right, *old_left]) == [(RULE, "A")]
        # the old left record re-examined today is still the stable deficit
        again = deficit(pid, "hemiparesis", 0.5, side="left")
        assert tiers(pipeline, pid, [*old_left, again]) == []

    def test_a_stable_deficit_does_not_set_lkw_for_a_new_one(self, pipeline: Pipeline) -> None:
        pid = "Patient/stable-and-new"
        stable = deficit(pid, "arm_weakness", 90 * 24, side="right")
        (found,) = evaluate(pipeline, pid, [stable, deficit(pid, "speech_disturbance", 2, side="unknown")])
        assert found.tier == "A" and THROMBOLYSIS in found.notes

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("tierA-old-stroke-new-deficit-no-lkw", [(RULE, "critical")]),
            ("tierA-stroke-sequela-deficit-not-recorded-before", [(RULE, "critical")]),
            ("nearmiss-stroke-sequela-same-side-deficit-recorded-before", []),
            ("nearmiss-old-stroke-condition-over-30-days", []),
        ],
    )
    def test_fixtures(self, pipeline: Pipeline, name: str, expected) -> None:
        (result,) = pipeline.evaluate(read_path(FOLDER / f"{name}.json"), parse_now("2025-03-10T12:00:00Z"))
        assert [(a.rule, a.severity) for a in result.alerts] == expected


class TestExclusions:
    def test_nerve_root_pain_explains_one_weak_leg_whatever_the_fact_order(self, pipeline: Pipeline) -> None:
        pid = "Patient/root"
        facts = [
            deficit(pid, "leg_weakness", 3, side="right"),
            finding(pid, "sciatica", "Condition/s", 3, "right"),
        ]
        assert tiers(pipeline, pid, facts) == tiers(pipeline, pid, facts[::-1]) == []
        assert tiers(pipeline, pid, facts[:1]) == [(RULE, "A")]

    @pytest.mark.parametrize(
        ("explaining", "side", "explained"),
        [
            ("sciatica", "right", True),
            ("sciatica", "bilateral", True),
            ("sciatica", "left", False),  # the other side explains nothing (3.3)
            ("sciatica", "unknown", False),  # not known to be the same side
            ("leg_pain", "right", True),
            ("leg_pain", "left", False),
            ("back_pain", "unknown", True),  # back pain with no side
            ("back_pain", "left", False),
        ],
    )
    def test_only_same_side_nerve_root_pain_explains_one_weak_leg(
        self, pipeline: Pipeline, explaining: str, side: str, explained: bool
    ) -> None:
        pid = f"Patient/root-{explaining}-{side}"
        facts = [
            deficit(pid, "leg_weakness", 3, side="right"),
            finding(pid, explaining, f"Condition/{explaining}", 3, side, src="Condition"),
        ]
        expected = [] if explained else [(RULE, "A")]
        stroke = [t for t in tiers(pipeline, pid, facts) if t[0] == RULE]
        assert stroke == [t for t in tiers(pipeline, pid, facts[::-1]) if t[0] == RULE] == expected

    def test_fixture_weak_right_leg_with_left_sciatica(self, pipeline: Pipeline) -> None:
        found = alert(pipeline, "tierB-one-weak-leg-with-other-side-sciatica")
        assert found.severity == "urgent" and "Leg weakness (right)" in found.rationale

    def test_face_or_speech_still_fires_beside_an_explained_leg(self, pipeline: Pipeline) -> None:
        pid = "Patient/mixed"
        facts = [
            deficit(pid, "leg_weakness", 3, side="right"),
            finding(pid, "back_pain", "Condition/b", 5, src="Condition"),
            deficit(pid, "speech_disturbance", 2, side="unknown"),
        ]
        assert tiers(pipeline, pid, facts) == [(RULE, "A")]

    def test_weakness_of_both_legs_from_two_sides_is_not_unilateral(self, pipeline: Pipeline) -> None:
        pid = "Patient/both"
        facts = [deficit(pid, "leg_weakness", 3, side="left"), deficit(pid, "leg_weakness", 3, side="right")]
        assert tiers(pipeline, pid, facts) == []

    def test_unknown_side_is_not_unilateral(self, pipeline: Pipeline) -> None:
        pid = "Patient/side"
        assert tiers(pipeline, pid, [deficit(pid, "leg_weakness", 3, side="unknown")]) == []

    def test_bells_palsy_explains_the_face_only(self, pipeline: Pipeline) -> None:
        pid = "Patient/bell"
        bells = finding(pid, "bells_palsy", "Condition/bell", 1, "right", src="Condition")
        face = deficit(pid, "facial_weakness", 3, side="right")
        assert tiers(pipeline, pid, [bells, face]) == []
        assert tiers(pipeline, pid, [bells, face, deficit(pid, "arm_weakness", 3)]) == [(RULE, "A")]


class TestTiaAndNotes:
    def test_tia_branches_carry_the_tia_disorder(self, pipeline: Pipeline) -> None:
        for name in ("tierB-tia-condition-2-days-ago", "tierB-deficit-resolved-within-24h"):
            found = alert(pipeline, name)
            assert (found.tier, found.disorder.code) == ("B", "266257000"), name
        assert (
            "deficit resolved within 24 h" in alert(pipeline, "tierB-deficit-resolved-within-24h").rationale
        )
        assert alert(pipeline, "tierA-stroke-condition-onset-6h").disorder.code == "230690007"

    def test_deficit_absent_only_after_24_h_is_not_a_tia(self, pipeline: Pipeline) -> None:
        pid = "Patient/late"
        seen = deficit(pid, "facial_weakness", 70)
        gone = deficit(pid, "facial_weakness", 30) | {"state": "absent"}
        assert tiers(pipeline, pid, [seen, gone]) == []
        sooner = deficit(pid, "facial_weakness", 60) | {"state": "absent"}
        assert tiers(pipeline, pid, [seen, sooner]) == [(RULE, "B")]

    @pytest.mark.parametrize(("mmol", "shown"), [(59 / 18, True), (61 / 18, False)])
    def test_low_glucose_note_uses_the_converted_value(self, pipeline: Pipeline, mmol: float, shown) -> None:
        pid = f"Patient/g{mmol:.2f}"
        facts = [
            lkw(pid, 1),
            deficit(pid, "hemiparesis", 0.5),
            value(pid, "glucose", round(mmol, 6), "Obs/g", unit="mmol/L"),
        ]
        (found,) = evaluate(pipeline, pid, facts)
        assert found.tier == "A"  # never suppressed
        notes = [n for n in found.notes if n.startswith("low glucose")]
        assert notes == (
            ["low glucose can mimic stroke — treat and reassess (Glucose 3.27778 mmol/L on 2025-03-10 11:00)"]
            if shown
            else []
        )

    def test_low_glucose_fixture_in_mmol_per_litre(self, pipeline: Pipeline) -> None:
        found = alert(pipeline, "confounder-other-unit-glucose-mmol-does-not-suppress")
        assert (
            "low glucose can mimic stroke — treat and reassess (Glucose 2.6 mmol/L on 2025-03-10 10:12)"
            in (found.notes)
        )
        assert "BE-FAST: Altered consciousness on 2025-03-10 10:10" in found.notes


def test_explain_lists_tiers_parameters_value_sets_and_actions() -> None:
    done = run("rules", "--explain", RULE)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for line in (
        "  - A: critical - sudden focal deficit within 24 h of last known well",
        "  - B: urgent - focal deficit within 7 days or transient ischaemic attack",
        "  - acute_h = 24",
        "  - thrombolysis_h = 4.5",
        "  - onset_max_d = 7",
        "  - radicular_within_d = 14",
        "  - glucose_low_mmol_l = 3.33333",
        "fires tier A when: [stroke_deficit] AND [stroke_lkw_h] ≤ 24",
        "fires tier B when: [stroke_resolved_deficit] [suggests Transient ischemic attack]",
        "fires tier A when: [stroke_deficit] ≤ 24 AND no latest lkw time within 7 days",
    ):
        assert line in text, line
    for key in ("lkw_time", "hemiparesis", "bells_palsy", "stroke_sequela", "tia_dx", "glucose", "sciatica"):
        assert f"https://redflags.dev/fhir/ValueSet/{key}>" in text, key
    assert (
        "Activate the stroke team / neurology now (due within 0.25 h; ServiceRequest; sct 308474002" in text
    )
    assert (
        "TIA: aspirin 300 mg now (due within 24 h; MedicationRequest; rxnorm 1191 Aspirin) [tier B only]"
        in text
    )
    assert "NO VALUE SET" not in text


def test_v02_pattern_unilateral_sciatica_and_weak_leg_is_no_stroke(pipeline: Pipeline) -> None:
    path = FIXTURES / "vignettes" / "V02-ces-near-miss-unilateral-sciatica.json"
    (result,) = pipeline.evaluate(read_path(path), parse_now("2025-03-10T12:00:00Z"))
    assert result.alerts == []


class TestNihssNote:
    def nihss(self, pid: str, score: int, hours_ago: float) -> dict:
        return value(pid, "nihss", score, f"Observation/nihss-{hours_ago}", hours_ago, unit="1")

    def severity_notes(self, found) -> list[str]:
        return [n for n in found.notes if n.startswith("stroke severity")]

    def test_the_latest_nihss_is_on_the_card_at_either_tier(self, pipeline: Pipeline) -> None:
        pid = "Patient/nihss"
        acute = [lkw(pid, 2), deficit(pid, "hemiparesis", 1.5)]
        (found,) = evaluate(pipeline, pid, [*acute, self.nihss(pid, 20, 1), self.nihss(pid, 14, 0.5)])
        assert found.tier == "A"  # a note never changes the tier
        assert self.severity_notes(found) == [
            "stroke severity: NIH Stroke Scale total 14 on 2025-03-10 11:30"
        ]
        (plain,) = evaluate(pipeline, pid, acute)
        assert self.severity_notes(plain) == [] and plain.tier == "A"
        late = [lkw(pid, 48), deficit(pid, "hemiparesis", 47), self.nihss(pid, 6, 40)]
        (found,) = evaluate(pipeline, pid, late)
        assert found.tier == "B"
        assert self.severity_notes(found) == ["stroke severity: NIH Stroke Scale total 6 on 2025-03-08 20:00"]

    def test_an_nihss_older_than_seven_days_belongs_to_another_episode(self, pipeline: Pipeline) -> None:
        pid = "Patient/nihss-old"
        facts = [lkw(pid, 2), deficit(pid, "hemiparesis", 1.5), self.nihss(pid, 9, 7 * 24 + 1)]
        (found,) = evaluate(pipeline, pid, facts)
        assert found.tier == "A" and self.severity_notes(found) == []
