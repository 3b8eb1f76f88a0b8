"""cauda_equina_syndrome (red-flags.md 1): decompression blocks per finding, CarePlan action codes."""

from __future__ import annotations

from engine.dsl import DAY
from redflags.pipeline import Pipeline
from rulesets.meta import LOINC, SNOMED

from .test_engine import NOW, finding

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
    assert ces(pipeline, pid, [back, retention]) == []
    assert ces(pipeline, pid, [back, sciatica, decompression(pid, 1)]) == ["urgent"]  # no date: no block
