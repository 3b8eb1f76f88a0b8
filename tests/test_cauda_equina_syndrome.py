"""cauda_equina_syndrome (docs/rules/cauda_equina_syndrome.md): decompression blocks per finding, CarePlan
action codes."""

from __future__ import annotations

import pytest

from engine.dsl import DAY
from redflags.pipeline import Pipeline
from rulesets.meta import LOINC, SNOMED

from .engine_helpers import NOW, finding
from .rule_helpers import alerts_of

RULE = "cauda_equina_syndrome"


def decompression(pid: str, days_ago: float) -> dict:
    return {
        "t": "procedure",
        "pid": pid,
        "ref": "Procedure/decompression",
        "key": "spinal_decompression_done",
        "ts": int(NOW - days_ago * DAY),
    }


def ces(pipeline: Pipeline, pid: str, facts: list[dict]) -> list[str]:
    return [a.severity for a in pipeline.engine.evaluate(pid, facts, NOW).alerts if a.rule == RULE]


class TestDecompression:
    def test_new_retention_before_the_operation_is_post_operative(self, pipeline: Pipeline) -> None:
        pid = "Patient/ret"
        back = finding(pid, "back_pain", "Condition/back", days_ago=7, src="Condition")
        retention = finding(pid, "urinary_retention", "Condition/ret", days_ago=2, src="Condition")
        assert ces(pipeline, pid, [back, retention]) == ["critical"]
        assert ces(pipeline, pid, [back, retention, decompression(pid, 1)]) == []
        # retention that began after the operation is a new emergency
        assert ces(pipeline, pid, [back, retention, decompression(pid, 3)]) == ["critical"]

    def test_bilateral_sciatica_operated_on_is_not_tier_b(self, pipeline: Pipeline) -> None:
        pid = "Patient/sci"
        facts = [
            finding(pid, "back_pain", "Condition/back", days_ago=9, src="Condition"),
            finding(pid, "sciatica", "Condition/sci", days_ago=9, side="bilateral", src="Condition"),
        ]
        assert ces(pipeline, pid, facts) == ["urgent"]
        assert ces(pipeline, pid, [*facts, decompression(pid, 6)]) == []
        assert ces(pipeline, pid, [*facts, decompression(pid, 10)]) == ["urgent"]  # before the symptoms


def test_action_codes_match_the_reference_table(pipeline: Pipeline) -> None:
    actions = pipeline.engine.metas[RULE].actions
    assert [sorted((c.system, c.code) for c in a.codes) for a in actions] == [
        sorted([(LOINC, "91717-9"), (LOINC, "30679-5"), (LOINC, "36531-2")]),
        sorted([(SNOMED, "16310003"), (SNOMED, "45211000")]),
        [],
        [(SNOMED, "308482002")],
        [(SNOMED, "10836008")],
    ]
    # 1.4 gives no tier for any action: tier B (bilateral radicular) gets the whole plan
    assert all(a.tiers == () for a in actions)
    assert actions[0].due_hours == 4


def test_an_undated_condition_never_fails_the_evaluation(pipeline: Pipeline) -> None:
    # A join on the onset of an undated record used to fail the whole evaluation (durable error
    # 311). Undated back pain cannot show that a retention episode is not older than it (1.3).
    pid = "Patient/undated"
    back = {**finding(pid, "back_pain", "Condition/back", src="Condition"), "ts": None, "onset": None}
    back = {k: v for k, v in back.items() if v is not None}
    sciatica = {k: v for k, v in back.items() if k != "ref"} | {"ref": "Condition/sci", "key": "sciatica"}
    sciatica["side"] = "bilateral"
    retention = finding(pid, "urinary_retention", "Condition/ret", days_ago=1, src="Condition")
    # current back pain and a new retention: tier A whatever began first (1.3)
    assert ces(pipeline, pid, [back, retention]) == ["critical"]
    assert ces(pipeline, pid, [back, sciatica, decompression(pid, 1)]) == ["urgent"]  # no date: no block


class TestOrderInsideTheWindow:
    """1.3: inside the 14-day window the order of the sphincter and back/leg findings does not
    matter; what began before the window is not new."""

    @pytest.mark.parametrize("sphincter", ["urinary_retention", "saddle_anesthesia", "fecal_incontinence"])
    @pytest.mark.parametrize(("sphincter_days", "back_days"), [(13, 9), (9, 13), (5, 5), (13.9, 0.5)])
    def test_sphincter_finding_before_or_after_back_pain_is_tier_a(
        self, pipeline: Pipeline, sphincter: str, sphincter_days: float, back_days: float
    ) -> None:
        pid = f"Patient/order-{sphincter}-{sphincter_days}-{back_days}"
        facts = [
            finding(pid, sphincter, "Observation/s", days_ago=sphincter_days),
            finding(pid, "back_pain", "Condition/back", days_ago=back_days, src="Condition"),
        ]
        assert ces(pipeline, pid, facts) == ces(pipeline, pid, facts[::-1]) == ["critical"]

    def test_retention_begun_before_the_window_is_not_new(self, pipeline: Pipeline) -> None:
        pid = "Patient/order-old"
        old = finding(pid, "urinary_retention", "Condition/ret", days_ago=14.1, src="Condition")
        back = finding(pid, "back_pain", "Condition/back", days_ago=5, src="Condition")
        assert ces(pipeline, pid, [old, back]) == ces(pipeline, pid, [back, old]) == []
        # recorded again today, still the episode that began before the window
        again = finding(pid, "urinary_retention", "Observation/ret-today", days_ago=0.1)
        assert ces(pipeline, pid, [old, again, back]) == []

    def test_fixture_retention_first_back_pain_later(self, pipeline: Pipeline) -> None:
        (alert,) = alerts_of(pipeline, RULE, "tierA-retention-first-back-pain-later-in-window")
        assert alert.severity == "critical"
        assert alert.rationale.index("Urinary retention") < alert.rationale.index("Back pain")
