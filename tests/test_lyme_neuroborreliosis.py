"""lyme_neuroborreliosis: EFNS grading notes, serology positivity, time joins, site parameters, explain."""

from __future__ import annotations

import pytest

from engine.dsl import DAY
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.explain import explain
from redflags.pipeline import Pipeline

from .conftest import FIXTURES
from .engine_helpers import NOW, finding, isolated, value

RULE = "lyme_neuroborreliosis"
FOLDER = FIXTURES / RULE
NEEDS_CSF = (
    "EFNS grading needs the CSF (possible = 2 of 3, definite = 3 of 3 with CSF pleocytosis and "
    "intrathecal Borrelia antibodies): EFNS criteria 1 of 3 "
)


def only(pipeline: Pipeline, name: str):
    results = pipeline.evaluate(read_path(FOLDER / f"{name}.json"), parse_now("2025-03-10T12:00:00Z"))
    found = [a for r in results for a in r.alerts]
    assert [a.rule for a in found] == [RULE], name
    return found[0]


def radicular(pid: str, days_ago: float = 23) -> dict:
    return finding(pid, "radicular_pain", f"Condition/{pid[8:]}-rad", days_ago=days_ago, src="Condition")


def serology(pid: str, days_ago: float, **fields: object) -> dict:
    fact = value(pid, "lyme_ab_serum", 1.0, f"Observation/{pid[8:]}-sero", hours_ago=days_ago * 24, unit="1")
    fact.update(fields)
    if "v" in fields and fields["v"] is None:
        del fact["v"]
    return fact


class TestEfnsGrading:
    def test_definite_possible_and_csf_needed_are_exclusive_notes(self, pipeline: Pipeline) -> None:
        definite = only(pipeline, "tierA-definite-csf-meningism")
        assert definite.severity == "urgent"
        assert definite.notes == (
            "EFNS grading definite Lyme neuroborreliosis: EFNS criteria 3 of 3 (neurological finding +1 "
            "(Meningism or headache since 2025-02-26); CSF pleocytosis +1 (CSF white cell count 86 /uL on "
            "2025-03-06 10:00); intrathecal Borrelia antibodies +1 (Borrelia antibodies, CSF POS on "
            "2025-03-06 10:00))",
        )
        possible = only(pipeline, "tierA-lyme-dx-leg-paresis")
        assert possible.notes == (
            "EFNS grading possible Lyme neuroborreliosis: EFNS criteria 2 of 3 (neurological finding +1 "
            "(Leg weakness (left) since 2025-02-18); CSF pleocytosis +1 (CSF white cell count 30 /uL on "
            "2025-03-06 10:00))",
        )
        pending = only(pipeline, "tierA-tick-bite-radicular-pain")
        assert pending.notes == (NEEDS_CSF + "(neurological finding +1 (Radicular pain since 2025-02-15))",)

    def test_csf_cells_in_si_units_are_converted(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "confounder-other-unit")
        # 0.045 x10^9/L = 45 x10^6/L = 45 /uL > 5
        assert "CSF pleocytosis +1 (CSF white cell count 45 /uL on 2025-03-06 10:00)" in alert.notes[0]
        assert alert.notes[0].startswith("EFNS grading definite")

    def test_rationale_names_the_neurological_finding_and_the_exposure(self, pipeline: Pipeline) -> None:
        alert = only(pipeline, "tierA-serology-above-cutoff-bilateral-facial")
        assert alert.rationale == (
            "Lyme neuroborreliosis, tier A (urgent, neurological finding after Borrelia exposure): "
            "Facial weakness (bilateral) since 2025-02-27; "
            "Borrelia antibodies, serum 3.2 on 2025-03-04 09:00."
        )


class TestSerologyPositivity:
    def fires(self, pipeline: Pipeline, pid: str, *facts: dict) -> list[str]:
        return [a.rule for a in pipeline.engine.evaluate(pid, [radicular(pid), *facts], NOW).alerts]

    def test_interpretation_decides_when_sent(self, pipeline: Pipeline) -> None:
        assert self.fires(pipeline, "Patient/s1", serology("Patient/s1", 5, interp="H")) == [RULE]
        assert self.fires(pipeline, "Patient/s2", serology("Patient/s2", 5, interp="POS", v=None)) == [RULE]
        # NEG wins over a number above the cut-off (qualitative test, 14.2)
        assert (
            self.fires(pipeline, "Patient/s3", serology("Patient/s3", 5, interp="NEG", v=3.0, high=1.1)) == []
        )

    def test_without_interpretation_the_lab_cut_off_decides(self, pipeline: Pipeline) -> None:
        assert self.fires(pipeline, "Patient/s4", serology("Patient/s4", 5, v=1.1, high=1.1)) == [RULE]
        assert self.fires(pipeline, "Patient/s5", serology("Patient/s5", 5, v=0.9, high=1.1)) == []
        assert self.fires(pipeline, "Patient/s6", serology("Patient/s6", 5, v=9.0)) == []  # no cut-off sent

    def test_exposure_must_lie_within_3_months_before_the_onset(self, pipeline: Pipeline) -> None:
        # onset 23 days ago: exposure up to 23 + 90 = 113 days ago counts
        assert self.fires(pipeline, "Patient/t1", serology("Patient/t1", 112, interp="POS")) == [RULE]
        assert self.fires(pipeline, "Patient/t2", serology("Patient/t2", 114, interp="POS")) == []
        tick = finding("Patient/t3", "tick_bite", "Condition/t3-tick", days_ago=114, src="Condition")
        assert self.fires(pipeline, "Patient/t3", tick) == []
        tick = finding("Patient/t4", "tick_bite", "Condition/t4-tick", days_ago=112, src="Condition")
        assert self.fires(pipeline, "Patient/t4", dict(tick, active=0, abated=int(NOW - 110 * DAY))) == [RULE]

    @pytest.mark.parametrize(
        ("key", "days_ago", "counts"),
        [
            ("tick_bite", 24, True),  # a day before the onset (23 days ago)
            ("tick_bite", 23, True),  # on the day of the onset
            ("tick_bite", 10, False),  # after the palsy: it did not cause it (11.1)
            ("erythema_migrans", 5, False),
            ("erythema_migrans", 30, True),
            ("lyme_dx", 5, True),  # a diagnosis may follow the symptoms
        ],
    )
    def test_a_bite_or_rash_after_the_onset_is_no_exposure(
        self, pipeline: Pipeline, key: str, days_ago: float, counts: bool
    ) -> None:
        pid = f"Patient/after-{key}-{days_ago}"
        event = finding(pid, key, f"Condition/{key}", days_ago=days_ago, src="Condition")
        assert self.fires(pipeline, pid, event) == ([RULE] if counts else [])
        assert self.fires(pipeline, pid, serology(pid, 5, interp="POS")) == [RULE]  # serology after: counts


def test_site_parameters_move_the_windows() -> None:
    out = isolated("""
        from pathlib import Path
        from fhir_adapters.intake import read_path
        from fhir_adapters.times import parse_now
        from redflags.pipeline import Pipeline
        folder = Path("fixtures/lyme_neuroborreliosis")
        site = Pipeline(params={"lyme_neuroborreliosis": {"exposure_before_onset_d": 20, "csf_wbc_max": 50}})
        for name in ("tierA-tick-bite-radicular-pain", "tierA-erythema-migrans-facial-palsy",
                     "tierA-lyme-dx-leg-paresis"):
            results = site.evaluate(read_path(folder / f"{name}.json"), parse_now("2025-03-10T12:00:00Z"))
            print(name, [(a.rule, a.notes[0][:30]) for r in results for a in r.alerts])
    """)
    assert out.splitlines() == [
        "tierA-tick-bite-radicular-pain []",  # bite 21 days before the onset
        "tierA-erythema-migrans-facial-palsy [('lyme_neuroborreliosis', 'EFNS grading needs the CSF (po')]",
        "tierA-lyme-dx-leg-paresis [('lyme_neuroborreliosis', 'EFNS grading needs the CSF (po')]",  # 30 /uL
    ]


def test_explain_lists_tier_parameters_value_sets_and_actions(pipeline: Pipeline) -> None:
    text = explain(RULE, pipeline.engine, pipeline.term)
    assert "  - A: urgent - neurological finding after Borrelia exposure" in text
    for name, number in pipeline.engine.params[RULE].items():
        assert f"  - {name} = {number:g}" in text
    assert (
        "derives [lyme_neuro] when: radicular pain present within 90 days begun 12 h to 12 weeks ago" in text
    )
    assert "fires tier A when: [lyme_neuro] AND tick bite ever recorded dated no earlier than 90 days" in text
    assert "sums [lyme_efns] from its items" in text
    assert (
        "lyme_ab_serum (Borrelia antibodies, serum) <https://redflags.dev/fhir/ValueSet/lyme_ab_serum>"
        in text
    )
    assert "loinc.org 5060-9" in text and "sct 95898004" in text and "icd-10-cm A69.22" in text
    assert "rxnorm 3640 Doxycycline, rxnorm 2193 Ceftriaxone" in text
    assert "(due within 168 h; ServiceRequest; sct 308474002 Referral to neurologist)" in text
    assert "NO VALUE SET" not in text


def test_index_values_are_read_as_dimensionless_numbers() -> None:
    from fhir_adapters import units

    # units.py gained "{index}" / "{Index_val}" -> "1": immunoassay indices (sample / cut-off)
    assert units.normalise("lyme_ab_serum", 3.2, "{index}", None) == 3.2
    assert units.normalise("lyme_ab_serum", 3.2, "{Index_val}", None) == 3.2
    assert units.normalise("lyme_ab_serum", 3.2, "[arb'U]/mL", None) is None  # not silently accepted
