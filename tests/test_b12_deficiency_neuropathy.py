"""b12_deficiency_neuropathy (docs/rules/b12_deficiency_neuropathy.md): conversions, boundaries, censoring,
site parameters."""

from __future__ import annotations

import pytest

from engine.dsl import DAY, WEEK
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.explain import explain
from redflags.pipeline import Pipeline

from .conftest import FIXTURES
from .engine_helpers import NOW, finding, isolated, value

RULE = "b12_deficiency_neuropathy"
HERE = FIXTURES / RULE


def _alerts(pipeline: Pipeline, name: str):
    results = pipeline.evaluate(read_path(HERE / f"{name}.json"), parse_now("2025-03-10T12:00:00Z"))
    return [a for r in results for a in r.alerts if a.rule == RULE]


def patient(pid: str, birth: str = "1950-01-01") -> dict:
    return {"t": "patient", "pid": pid, "ref": pid, "birth": birth}


def b12(pid: str, pg_ml: float, days_ago: float = 10) -> dict:
    return value(pid, "b12_total", pg_ml, f"Observation/{pid[8:]}-b12", hours_ago=days_ago * 24, unit="pg/mL")


def mma(pid: str, umol_l: float, high: float | None = None) -> dict:
    fact = value(pid, "mma", umol_l, f"Observation/{pid[8:]}-mma", hours_ago=5 * 24, unit="umol/L")
    if high is not None:
        fact.update(high=high)
    return fact


def paraesthesia(pid: str) -> dict:
    return finding(pid, "paresthesia", f"Observation/{pid[8:]}-par", days_ago=30, side="bilateral")


def severities(pipeline: Pipeline, pid: str, facts: list[dict]) -> list[str]:
    return [a.severity for a in pipeline.engine.evaluate(pid, facts, NOW).alerts if a.rule == RULE]


class TestValues:
    def test_pmol_per_litre_is_converted_before_the_cut_off(self, pipeline: Pipeline) -> None:
        (alert,) = _alerts(pipeline, "tierB-deficient-b12-in-pmol-per-L-paraesthesia")
        # 95 pmol/L x 1.355 = 128.725 pg/mL, shown with its date and the cut-off it fell below
        assert "B12 deficient (129 pg/mL < 180 pg/mL)" in alert.rationale
        assert "128.725 pg/mL on 2025-03-01 09:00" in alert.rationale
        assert "age 74" in alert.rationale and alert.tier == "B"

    def test_150_pmol_per_litre_is_203_pg_per_ml_not_deficient(self, pipeline: Pipeline) -> None:
        assert _alerts(pipeline, "confounder-other-unit-150-pmol-per-L") == []
        pid = "Patient/v16"
        facts = [patient(pid), paraesthesia(pid), b12(pid, 150 * 1.355), mma(pid, 0.5)]
        assert severities(pipeline, pid, facts) == ["routine"]  # indeterminate: only with a raised MMA

    def test_mma_in_nanomoles_is_converted(self, pipeline: Pipeline) -> None:
        (alert,) = _alerts(pipeline, "tierB-indeterminate-b12-mma-high-in-nmol-per-L")
        assert "MMA raised (0.62 umol/L > 0.45 umol/L)" in alert.rationale
        assert "B12 indeterminate (240 pg/mL, 180-350 pg/mL)" in alert.rationale

    @pytest.mark.parametrize(
        ("pg_ml", "mma_umol", "expected"),
        [
            (179.9, None, ["routine"]),  # deficient
            (180, None, []),  # indeterminate without MMA
            (350, 0.46, ["routine"]),  # upper edge of indeterminate, MMA raised
            (350.1, 0.46, []),  # above 350: not indeterminate, MMA does not matter
            (300, 0.45, []),  # MMA must be above 0.45
        ],
    )
    def test_cut_offs(
        self, pipeline: Pipeline, pg_ml: float, mma_umol: float | None, expected: list[str]
    ) -> None:
        pid = f"Patient/cut-{pg_ml}-{mma_umol}"
        facts = [patient(pid), paraesthesia(pid), b12(pid, pg_ml)]
        if mma_umol is not None:
            facts.append(mma(pid, mma_umol))
        assert severities(pipeline, pid, facts) == expected

    def test_mma_laboratory_limit_counts_only_when_exceeded(self, pipeline: Pipeline) -> None:
        pid = "Patient/lab"
        base = [patient(pid), paraesthesia(pid), b12(pid, 250)]
        assert severities(pipeline, pid, [*base, mma(pid, 0.42, high=0.40)]) == ["routine"]
        assert severities(pipeline, pid, [*base, mma(pid, 0.38, high=0.40)]) == []

    def test_no_birth_date_is_no_age(self, pipeline: Pipeline) -> None:
        pid = "Patient/nobirth"
        facts = [{"t": "patient", "pid": pid, "ref": pid}, paraesthesia(pid), b12(pid, 100)]
        assert severities(pipeline, pid, facts) == []
        assert severities(pipeline, pid, [patient(pid, "1964-03-10"), *facts[1:]]) == ["routine"]  # 61 today


class TestTreatmentAndEscalation:
    def test_a_result_after_replacement_is_ignored_and_the_earlier_one_counts(
        self, pipeline: Pipeline
    ) -> None:
        (alert,) = _alerts(pipeline, "tierB-b12-before-replacement-counts")
        assert "120 pg/mL on 2025-01-10" in alert.rationale and "640" not in alert.rationale
        assert "Observation/b12-b-pre-rx-b12-mar" not in alert.evidence
        assert alert.notes == (
            "B12 replacement already recorded (B12 replacement on 2025-01-20); "
            "B12 results taken after it began are ignored",
        )

    def test_gait_difficulty_escalates_only_within_eight_weeks(self, pipeline: Pipeline) -> None:
        pid = "Patient/gait"
        base = [patient(pid), paraesthesia(pid), b12(pid, 120)]
        recent = finding(pid, "gait_difficulty", "Observation/gait", days_ago=8 * 7)
        older = finding(pid, "gait_difficulty", "Observation/gait", days_ago=8 * 7 + 1)
        assert severities(pipeline, pid, [*base, recent]) == ["urgent"]
        assert severities(pipeline, pid, [*base, older]) == ["routine"]  # still a neuro finding (12 months)

    def test_escalated_plan_has_the_urgent_referral(self, pipeline: Pipeline) -> None:
        (alert,) = _alerts(pipeline, "tierA-deficient-b12-falls")
        meta = pipeline.engine.metas[RULE]
        texts = [a.text for a in meta.actions_for(alert.tier)]
        assert alert.tier == "A" and alert.severity == "urgent"
        assert "Urgent neurology referral: the neurological picture is worsening" in texts
        assert not any(t.startswith("Neurology referral if") for t in texts)
        assert "Fall or long lie since 2025-02-20" in alert.rationale


def test_site_override_moves_the_deficiency_cut_off() -> None:
    facts = """[patient("Patient/s"), paraesthesia("Patient/s"), b12("Patient/s", 190)]"""
    code = f"""
        from tests.test_b12_deficiency_neuropathy import patient, paraesthesia, b12
        site = Engine(MODULES, params={{"{RULE}": {{"b12_deficient_pg_ml": 200}}}})
        print([a.severity for a in site.evaluate("Patient/s", {facts}, NOW).alerts])
    """
    assert isolated(code).strip() == "['routine']"  # 190 pg/mL: deficient under the BSH 200 cut-off


def test_site_default_does_not_fire_at_190(pipeline: Pipeline) -> None:
    pid = "Patient/s"
    assert severities(pipeline, pid, [patient(pid), paraesthesia(pid), b12(pid, 190)]) == []


def test_explain_lists_tiers_parameters_value_sets_and_actions(pipeline: Pipeline) -> None:
    text = explain(RULE, pipeline.engine, pipeline.term)
    assert "  - A: urgent - " in text and "  - B: routine - " in text
    for name, value_ in pipeline.engine.params[RULE].items():
        assert f"{name} = {value_:g}" in text
    assert "b12_min_age = 60" in text and "b12_deficient_pg_ml = 180" in text
    assert "ignores b12_total results taken after b12_replacement began" in text
    assert (
        "fires tier A when: patient older than 60 years AND [b12_neuro] AND [b12_low] AND [b12_worsening]"
        in text
    )
    assert "https://redflags.dev/fhir/ValueSet/b12_total" in text and "loinc.org 14685-2" in text
    assert "rxnorm 11248" in text and "loinc.org 13964-2 Methylmalonate" in text
    assert "NO VALUE SET" not in text


def test_windows_are_twelve_months_and_eight_weeks(pipeline: Pipeline) -> None:
    params = pipeline.engine.params[RULE]
    assert (
        params["b12_within_days"] * DAY == 365 * DAY and params["worsening_within_weeks"] * WEEK == 8 * WEEK
    )
    pid = "Patient/old"
    assert severities(pipeline, pid, [patient(pid), paraesthesia(pid), b12(pid, 120, days_ago=364)]) == [
        "routine"
    ]
    assert severities(pipeline, pid, [patient(pid), paraesthesia(pid), b12(pid, 120, days_ago=366)]) == []


class TestCardNotes:
    """Notes never change the tier; each names the record it read, with its date."""

    def notes(self, pipeline: Pipeline, pid: str, *extra: dict) -> tuple[str, ...]:
        facts = [patient(pid), paraesthesia(pid), b12(pid, 120), *extra]
        (alert,) = [a for a in pipeline.engine.evaluate(pid, facts, NOW).alerts if a.rule == RULE]
        assert alert.severity == "routine"
        return alert.notes

    def test_alternative_causes_of_neuropathy(self, pipeline: Pipeline) -> None:
        pid = "Patient/alt"
        causes = [
            finding(pid, "diabetic_neuropathy", "Condition/dpn", days_ago=400, src="Condition"),
            finding(pid, "diabetes", "Condition/t2dm", days_ago=3000, src="Condition"),
            finding(pid, "alcoholic_polyneuropathy", "Condition/apn", days_ago=200, src="Condition"),
        ]
        assert self.notes(pipeline, pid, *causes) == (
            "alternative cause of neuropathy on record: Diabetic neuropathy since 2024-02-04",
            "alternative cause of neuropathy on record: Diabetes since 2016-12-22",
            "alternative cause of neuropathy on record: Alcoholic polyneuropathy since 2024-08-22",
        )
        assert self.notes(pipeline, pid) == ()
        resolved = causes[1] | {"active": 0}
        assert self.notes(pipeline, pid, resolved) == ()  # not current

    def test_homocysteine_above_the_laboratory_limit_or_else_15_umol_per_litre(
        self, pipeline: Pipeline
    ) -> None:
        pid = "Patient/hcy"

        def hcy(umol_l: float, high: float | None = None, days_ago: float = 5) -> dict:
            fact = value(pid, "homocysteine", umol_l, "Observation/hcy", days_ago * 24, unit="umol/L")
            return fact if high is None else fact | {"high": high}

        on = "Homocysteine {} umol/L on 2025-03-05 12:00"
        assert self.notes(pipeline, pid, hcy(22, high=13)) == (
            f"supporting: homocysteine above the laboratory's upper limit ({on.format(22)})",
        )
        assert self.notes(pipeline, pid, hcy(14, high=13)) == (
            f"supporting: homocysteine above the laboratory's upper limit ({on.format(14)})",
        )
        assert self.notes(pipeline, pid, hcy(17, high=20)) == ()  # the laboratory's limit decides
        assert self.notes(pipeline, pid, hcy(15.1)) == (
            f"supporting: homocysteine above 15 umol/L ({on.format(15.1)})",
        )
        assert self.notes(pipeline, pid, hcy(15)) == ()
        assert self.notes(pipeline, pid, hcy(40, days_ago=366)) == ()  # older than 12 months
        assert self.notes(pipeline, pid) == ()
