"""myasthenic_crisis_risk: computed values in the rationale, trigger notes, site parameters, explain."""

from __future__ import annotations

from pathlib import Path

from engine.dsl import DAY
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.explain import explain
from redflags.pipeline import Pipeline

from .conftest import FIXTURES
from .engine_helpers import NOW, finding, isolated, value

RULE = "myasthenic_crisis_risk"
FOLDER = FIXTURES / RULE


def alerts(pipeline: Pipeline, name: str) -> list:
    results = pipeline.evaluate(read_path(FOLDER / f"{name}.json"), parse_now("2025-03-10T12:00:00Z"))
    return [a for r in results for a in r.alerts if a.rule == RULE]


def only(pipeline: Pipeline, name: str):
    found = alerts(pipeline, name)
    assert len(found) == 1, name
    return found[0]


def known_mg(pid: str) -> list[dict]:
    return [finding(pid, "mg_dx", f"Condition/{pid[8:]}-mg", days_ago=2000, src="Condition")]


def medication(pid: str, key: str, days_ago: float, active: int = 1) -> dict:
    return {
        "t": "medication",
        "pid": pid,
        "ref": f"MedicationRequest/{pid[8:]}-{key}",
        "key": key,
        "active": active,
        "ts": int(NOW - days_ago * DAY),
    }


class TestComputedValuesInTheRationale:
    def test_fvc_per_kg_names_value_unit_and_dates(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "tierA-fvc-per-kg-below-20")
        assert alert.tier == "A" and alert.severity == "critical"
        assert (
            "FVC 16.0 mL/kg (Forced vital capacity 1150 mL on 2025-03-10 07:00; "
            "Body weight 72 kg on 2025-03-09 08:00)" in alert.rationale
        )
        assert "Myasthenia gravis since 2019-05-14" in alert.rationale

    def test_litres_and_pounds_are_converted_before_dividing(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "confounder-other-unit")
        # 1.1 L = 1100 mL; 154 lb = 69.85 kg; 1100 / 69.85 = 15.7 mL/kg
        assert "FVC 15.7 mL/kg (Forced vital capacity 1100 mL" in alert.rationale
        assert "Body weight 69.8532 kg" in alert.rationale

    def test_fvc_fall_is_the_percentage_of_the_earlier_value(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "tierA-fvc-fell-30-percent")
        # 3200 mL -> 2100 mL: 1 - 2100/3200 = 34.4 %; 2100 / 60 = 35 mL/kg is no red flag
        assert "FVC fell 34 % (Forced vital capacity 3200 mL on 2025-03-04 09:00; " in alert.rationale
        assert "mL/kg" not in alert.rationale

    def test_mip_magnitude(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "tierA-mip-minus-25")
        assert "MIP magnitude 25 cmH2O (Maximal inspiratory pressure -25 cm[H2O] on 2025-03-10 06:00)" in (
            alert.rationale
        )

    def test_achr_antibodies_against_the_lab_limit_or_the_fallback(self, pipeline: Pipeline) -> None:
        lab = only(pipeline, "tierA-achr-above-lab-limit-respiratory-failure")
        assert (
            "AChR antibodies above the laboratory upper limit (Acetylcholine-receptor antibodies 6.4 nmol/L"
            in (lab.rationale)
        )
        fallback = only(pipeline, "tierB-achr-fallback-new-paraparesis")
        assert fallback.tier == "B"
        assert "AChR antibodies above 0.5 nmol/L (Acetylcholine-receptor antibodies 2.3 nmol/L" in (
            fallback.rationale
        )
        assert alerts(pipeline, "nearmiss-achr-below-lab-limit") == []

    def test_preliminary_fvc_supports_the_critical_tier_and_is_marked(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "tierA-preliminary-fvc")
        assert alert.preliminary and "900 mL (preliminary)" in alert.rationale


class TestTriggerNotes:
    def test_notes_name_the_infection_and_the_drug_class_never_an_old_order(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "tierB-exacerbation-dx-with-triggers")
        assert alert.tier == "B"
        assert alert.notes == (
            "possible trigger, infection: Fever on 2025-03-05 18:00",
            "possible trigger, new drug that can worsen myasthenia gravis: "
            "Aminoglycoside antibiotic on 2025-03-06",
        )  # the 2022 metoprolol order is not new

    def test_triggers_never_raise_or_change_a_tier(self, pipeline: Pipeline) -> None:
        assert alerts(pipeline, "nearmiss-triggers-only") == []
        pid = "Patient/mg-t"
        base = [*known_mg(pid), finding(pid, "orthopnea", "Observation/orth", days_ago=0.5)]
        with_triggers = [
            *base,
            medication(pid, "mg_drug_fluoroquinolone", days_ago=3, active=0),  # completed course
            medication(pid, "mg_drug_beta_blocker", days_ago=20),  # outside 14 days
            finding(pid, "recent_infection", "Condition/uri", days_ago=5, src="Condition"),
            finding(pid, "ptosis", "Observation/ptosis", days_ago=1),
        ]
        plain = pipeline.engine.evaluate(pid, base, NOW).alerts
        noted = pipeline.engine.evaluate(pid, with_triggers, NOW).alerts
        assert [(a.rule, a.tier) for a in plain] == [(a.rule, a.tier) for a in noted] == [(RULE, "A")]
        assert plain[0].notes == ()
        assert len(noted[0].notes) == 3
        assert noted[0].notes[0].startswith("possible trigger, infection: Recent infection since ")
        assert (
            noted[0]
            .notes[1]
            .startswith(
                "possible trigger, new drug that can worsen myasthenia gravis: Fluoroquinolone antibiotic on "
            )
        )
        assert noted[0].notes[2].startswith("ocular signs: Ptosis on ")
        assert "Beta-blocker" not in " ".join(noted[0].notes)


class TestSharedRespiratoryFacts:
    """The FVC-fall and MIP definitions moved to common.py: GBS behaves as before."""

    def gbs(self, pid: str, later_ml: float) -> list[dict]:
        return [
            finding(pid, "leg_weakness", "Condition/legs", days_ago=5, side="bilateral", src="Condition"),
            finding(pid, "reflexes_absent", "Observation/refl", days_ago=1, side="bilateral"),
            value(pid, "fvc", 3000, "Observation/fvc1", hours_ago=72),
            value(pid, "fvc", later_ml, "Observation/fvc2", hours_ago=2),
            value(pid, "body_weight", 60, "Observation/w", hours_ago=30, unit="kg"),
        ]

    def test_gbs_fvc_fall_of_30_percent_is_still_tier_a(self, pipeline: Pipeline) -> None:
        fell = pipeline.engine.evaluate("Patient/g1", self.gbs("Patient/g1", 2100), NOW).alerts
        assert [(a.rule, a.tier) for a in fell] == [("guillain_barre_syndrome", "A")]
        assert any(
            c.text.startswith("FVC fell by 30 % from the episode's first FVC") for c in fell[0].criteria
        )
        less = pipeline.engine.evaluate("Patient/g2", self.gbs("Patient/g2", 2200), NOW).alerts
        assert [(a.rule, a.tier) for a in less] == [("guillain_barre_syndrome", "B")]  # 26.7 %

    def test_an_earlier_fvc_outside_the_mg_episode_does_not_count(self, pipeline: Pipeline) -> None:
        pid = "Patient/mg-old-fvc"
        facts = [
            *known_mg(pid),
            value(pid, "fvc", 3000, "Observation/fvc1", hours_ago=20 * 24),
            value(pid, "fvc", 1900, "Observation/fvc2", hours_ago=2),
            value(pid, "body_weight", 60, "Observation/w", hours_ago=30, unit="kg"),
        ]
        assert pipeline.engine.evaluate(pid, facts, NOW).alerts == []  # 31.7 mL/kg, fall 20 d ago


def test_site_parameters_move_the_thresholds() -> None:
    out = isolated("""
        from pathlib import Path
        from fhir_adapters.intake import read_path
        from fhir_adapters.times import parse_now
        from redflags.pipeline import Pipeline
        site = Pipeline(params={"myasthenic_crisis_risk": {"fvc_per_kg_min": 15, "achr_ab_uln_nmol_l": 3}})
        folder = Path("fixtures/myasthenic_crisis_risk")
        names = ("tierA-fvc-per-kg-below-20", "tierB-achr-fallback-new-paraparesis", "tierA-preliminary-fvc")
        for name in names:
            results = site.evaluate(read_path(folder / f"{name}.json"), parse_now("2025-03-10T12:00:00Z"))
            print(name, [(a.rule, a.tier) for r in results for a in r.alerts])
    """)
    assert out.splitlines() == [
        "tierA-fvc-per-kg-below-20 []",  # 16.0 mL/kg is not < 15
        "tierB-achr-fallback-new-paraparesis []",  # 2.3 nmol/L is not > 3
        "tierA-preliminary-fvc [('myasthenic_crisis_risk', 'A')]",  # 13.2 mL/kg < 15
    ]


def test_explain_lists_tiers_parameters_value_sets_and_actions(pipeline: Pipeline) -> None:
    text = explain(RULE, pipeline.engine, pipeline.term)
    assert "  - A: critical - respiratory or bulbar failure in myasthenia gravis" in text
    assert "  - B: urgent - worsening myasthenia gravis" in text
    for name, number in pipeline.engine.params[RULE].items():
        assert f"  - {name} = {number:g}" in text
    assert "fires tier A when: [mg_known] AND [mg_respiratory]" in text
    assert "fires tier A when: [mg_known] AND [mg_bulbar] AND [mg_worsening]" in text
    assert "fires tier B when: [mg_known] AND [mg_worsening]" in text
    assert "derives [resp_fvc_fall] when:" in text and "derives [weakness_progression]" in text
    assert "<https://redflags.dev/fhir/ValueSet/mg_drug_aminoglycoside>: leg-weakness-finding " in text
    assert "rxnorm 1596450" in text and "rxnorm 6918" in text and "sct 80976008" in text
    assert "Non-invasive ventilation" in text and "[tier A only]" in text
    assert "(due within 1 h; Task; no code)" in text
    assert "NO VALUE SET" not in text


def test_every_fixture_is_expected_by_name() -> None:
    names = sorted(p.name for p in Path(FOLDER).glob("*.json") if not p.name.endswith(".expected.json"))
    assert sum(n.startswith("tierA-") for n in names) >= 5 and sum(n.startswith("tierB-") for n in names) >= 3
    assert sum(n.startswith("nearmiss-") for n in names) >= 8
