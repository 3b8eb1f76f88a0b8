"""spinal_cord_compression (docs/rules/spinal_cord_compression.md): what the fixture corpus cannot show
compactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.dsl import DAY
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline

from .cli_helpers import run
from .conftest import FIXTURES
from .engine_helpers import NOW, finding, isolated, value

RULE = "spinal_cord_compression"
FOLDER = FIXTURES / RULE


def alerts(pipeline: Pipeline, name: str) -> list:
    path = FOLDER / f"{name}.json"
    (result,) = pipeline.evaluate(read_path(path), parse_now("2025-03-10T12:00:00Z"))
    return result.alerts


def condition(pid: str, key: str, days_ago: float, side: str = "unknown", active: int = 1) -> dict:
    return finding(pid, key, f"Condition/{key}", days_ago, side, src="Condition") | {"active": active}


def mrc(pid: str, grade: int, hours_ago: float, side: str = "left", site: str = "hip_flexors") -> dict:
    fact = value(pid, "mrc_grade", grade, f"Observation/mrc-{hours_ago}", hours_ago, unit="1")
    return fact | {"side": side, "site": site, "limb": "leg"}


def procedure(pid: str, key: str, days_ago: float) -> dict:
    return {
        "t": "procedure",
        "pid": pid,
        "ref": f"Procedure/{key}",
        "key": key,
        "ts": int(NOW - days_ago * DAY),
    }


def evaluate(pipeline: Pipeline, pid: str, facts: list[dict]) -> list[tuple[str, str]]:
    return [(a.rule, a.tier) for a in pipeline.engine.evaluate(pid, facts, NOW).alerts]


def msc(pid: str, weakness_days_ago: float) -> list[dict]:
    """Known cancer, back pain for 20 days, leg weakness that began ``weakness_days_ago``."""
    return [
        condition(pid, "cancer_any", 800),
        condition(pid, "back_pain", 20),
        condition(pid, "leg_weakness", weakness_days_ago, side="left"),
    ]


class TestRationale:
    def test_malignant_branch_names_each_finding_with_its_date(self, pipeline: Pipeline) -> None:
        (alert,) = alerts(pipeline, "tierA-malignant-vertebral-metastases-new-leg-paresis")
        assert (alert.rule, alert.tier, alert.severity) == (RULE, "A", "critical")
        assert alert.rationale == (
            "Spinal cord compression, tier A (critical, cord compression suspected: whole-spine MRI within "
            "24 h): A1 known cancer + spinal pain + new neurological deficit (Bone metastases since "
            "2024-06-03; Back pain since 2025-02-25; Leg weakness (left) since 2025-03-08)."
        )
        assert set(alert.evidence) == {
            "Condition/scc-a1-bone-mets-vertebral-mets",
            "Condition/scc-a1-bone-mets-back-pain",
            "Condition/scc-a1-bone-mets-weakness-left-leg",
        }
        assert alert.disorder.code == "71286001"

    def test_post_injury_branch_shows_the_falling_grades(self, pipeline: Pipeline) -> None:
        (alert,) = alerts(pipeline, "tierA-post-injury-mrc-grade-falling")
        assert "A2 weakness progressing after a spinal injury" in alert.rationale
        assert "Spinal cord injury since 2025-03-08" in alert.rationale
        assert "(left) 4 on 2025-03-08 18:00" in alert.rationale
        assert "(left) 2 on 2025-03-10 07:00" in alert.rationale

    def test_tier_b_reads_as_no_deficit_yet(self, pipeline: Pipeline) -> None:
        (alert,) = alerts(pipeline, "tierB-known-cancer-back-pain-no-deficit")
        assert (alert.tier, alert.severity) == ("B", "urgent")
        assert (
            "B known cancer + spinal pain (Any malignant cancer since 2022-04-20; Back pain since 2025-02-27)"
            in (alert.rationale)
        )


class TestNewDeficitWindow:
    def test_weakness_begun_within_30_days_is_new(self, pipeline: Pipeline) -> None:
        assert evaluate(pipeline, "Patient/w29", msc("Patient/w29", 29)) == [(RULE, "A")]
        assert evaluate(pipeline, "Patient/w31", msc("Patient/w31", 31)) == [(RULE, "B")]

    def test_an_mrc_grade_alone_is_not_a_new_deficit_but_its_fall_is(self, pipeline: Pipeline) -> None:
        pid = "Patient/mrc"
        base = [condition(pid, "cancer_any", 800), condition(pid, "back_pain", 20)]
        assert evaluate(pipeline, pid, [*base, mrc(pid, 2, 3)]) == [(RULE, "B")]
        fell = [*base, mrc(pid, 4, 50), mrc(pid, 2, 3)]
        assert evaluate(pipeline, pid, fell) == [(RULE, "A")]

    def test_site_override_moves_the_window(self) -> None:
        out = isolated("""
            from tests.test_spinal_cord_compression import msc
            site = Engine(MODULES, params={"spinal_cord_compression": {"window_neuro_d": 10}})
            for days in (9, 15):
                pid = f"Patient/d{days}"
                print(days, [(a.rule, a.tier) for a in site.evaluate(pid, msc(pid, days), NOW).alerts])
        """)
        assert out.splitlines() == [
            "9 [('spinal_cord_compression', 'A')]",
            "15 [('spinal_cord_compression', 'B')]",
        ]


class TestPostInjury:
    def old_injury(self, pid: str) -> list[dict]:
        return [
            condition(pid, "spinal_cord_injury", 9 * 365),
            condition(pid, "paraplegia_paraparesis", 9 * 365),
        ]

    def test_old_injury_with_a_recent_fall_in_grade_fires(self, pipeline: Pipeline) -> None:
        pid = "Patient/old-drop"
        facts = [*self.old_injury(pid), mrc(pid, 3, 20 * 24), mrc(pid, 1, 2)]
        assert evaluate(pipeline, pid, facts) == [(RULE, "A")]

    def test_old_injury_whose_grade_fell_long_ago_is_stable(self, pipeline: Pipeline) -> None:
        pid = "Patient/old-stable"
        facts = [*self.old_injury(pid), mrc(pid, 3, 700 * 24), mrc(pid, 1, 600 * 24), mrc(pid, 1, 2)]
        assert evaluate(pipeline, pid, facts) == []

    def test_grades_before_the_injury_are_not_progression(self, pipeline: Pipeline) -> None:
        pid = "Patient/pre"
        injury = condition(pid, "spinal_cord_injury", 1)  # injured yesterday
        facts = [injury, mrc(pid, 5, 30), mrc(pid, 2, 2)]  # MRC 5 before it, 2 after
        assert evaluate(pipeline, pid, facts) == []


class TestAlreadyTreated:
    def test_decompression_before_the_newest_finding_does_not_block(self, pipeline: Pipeline) -> None:
        pid = "Patient/re"
        # Operated 5 days ago; the weakness began 2 days ago: a new episode.
        facts = [*msc(pid, 2), procedure(pid, "spinal_decompression_done", 5)]
        assert evaluate(pipeline, pid, facts) == [(RULE, "A")]

    @pytest.mark.parametrize("key", ["spinal_decompression_done", "spinal_radiotherapy_done"])
    def test_treatment_after_every_finding_blocks_both_tiers(self, pipeline: Pipeline, key: str) -> None:
        pid = f"Patient/{key}"
        assert evaluate(pipeline, pid, [*msc(pid, 2), procedure(pid, key, 1)]) == []

    def test_cord_compression_resolved_after_the_findings_blocks(self, pipeline: Pipeline) -> None:
        pid = "Patient/resolved"
        dx = condition(pid, "cord_compression_dx", 3, active=0) | {"abated": int(NOW - 1 * DAY)}
        assert evaluate(pipeline, pid, [*msc(pid, 5), dx]) == []
        # An older, resolved compression does not hide a new episode.
        old = condition(pid, "cord_compression_dx", 400, active=0) | {"abated": int(NOW - 300 * DAY)}
        assert evaluate(pipeline, pid, [*msc(pid, 5), old]) == [(RULE, "A")]


class TestCompetingRules:
    CASE = FOLDER / "tierA-suppresses-cauda-equina-tierB.json"

    def test_cauda_equina_tier_b_would_fire_without_cord_compression(self) -> None:
        out = isolated(f"""
            from pathlib import Path
            from fhir_adapters import terminology
            from fhir_adapters.facts import patient_facts
            from fhir_adapters.intake import read_path
            from rulesets import VALUESET_DIR, cauda_equina_syndrome, common
            term = terminology.load(VALUESET_DIR)
            (group,) = read_path(Path({str(self.CASE)!r})).patients.values()
            facts = patient_facts(group, term).facts
            without = Engine([common, cauda_equina_syndrome])
            print([(a.rule, a.tier) for a in without.evaluate(group.pid, facts, NOW).alerts])
        """)
        assert out.strip() == "[('cauda_equina_syndrome', 'B')]"

    def test_cord_compression_tier_a_suppresses_it(self, pipeline: Pipeline) -> None:
        assert [(a.rule, a.tier) for a in alerts(pipeline, self.CASE.stem)] == [(RULE, "A")]

    def test_cord_signs_move_bilateral_weakness_from_gbs_to_the_cord(self, pipeline: Pipeline) -> None:
        path = FIXTURES / "guillain_barre_syndrome" / "nearmiss-bilateral-weakness-hyperreflexia.json"
        (result,) = pipeline.evaluate(read_path(path), parse_now("2025-03-10T12:00:00Z"))
        assert [(a.rule, a.tier) for a in result.alerts] == [(RULE, "A")]
        assert "A5 new weakness of both legs with a cord sign" in result.alerts[0].rationale


def test_explain_lists_tiers_parameters_value_sets_and_actions() -> None:
    done = run("rules", "--explain", RULE)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for line in (
        "  - A: critical - cord compression suspected: whole-spine MRI within 24 h",
        "  - B: urgent - known cancer with spinal pain: MRI within a week",
        "  - window_neuro_d = 30",
        "  - dx_within_d = 30",
        "  - progression_within_d = 30",
        "  - fever_within_d = 7",
        "fires tier A when: [scc_a]",
        "fires tier B when: [scc_b]",
    ):
        assert line in text, line
    for key in (
        "cancer_any",
        "bone_mets",
        "back_pain",
        "sensory_level",
        "anticoagulant_active",
        "spinal_radiotherapy_done",
        "spinal_decompression_done",
        "cord_compression_dx",
    ):
        assert f"https://redflags.dev/fhir/ValueSet/{key}>" in text, key
    assert "derives [known_cancer] when: cancer any ever recorded" in text  # shared building block
    assert (
        "MRI of the whole spine now (within 24 h at most) (due within 24 h; ServiceRequest; loinc.org 36531-2"
        in text
    )
    assert "[tier B only]" in text and "rxnorm 3264 Dexamethasone) [tier A only]" in text
    assert "NO VALUE SET" not in text


def test_radiotherapy_value_set_is_a_local_procedure_key(pipeline: Pipeline) -> None:
    info = pipeline.term.keys["spinal_radiotherapy_done"]
    assert (info.kind, info.resource_types) == ("procedure", frozenset({"Procedure"}))


def test_fixture_folder_exists() -> None:
    assert len([p for p in FOLDER.glob("*.json") if not p.name.endswith(".expected.json")]) >= 20
    assert Path(FOLDER / "nearmiss-old-spinal-cord-injury-stable-paraplegia.json").exists()
