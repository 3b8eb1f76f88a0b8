"""A rule whose calculation raises leaves out the rules that depend on it, not the patient.

A derivation's ``value=``/``side=`` function is the rule's own Python: should one raise on a value
nobody foresaw, ``Engine.evaluate(isolate=True)`` (what the stateless pipeline asks for) drops
the derived fact, leaves out every rule that reads it (directly or through other derivations,
``engine.session.dependents``), names them in ``Evaluation.failed`` and keeps every other rule's
alerts. Without ``isolate`` the evaluation fails loudly, as before (tests/test_engine.py).
"""

from __future__ import annotations

from redflags.pipeline import Pipeline

from .engine_helpers import isolated

BROKEN = """
from engine.dsl import fact, patient
import rulesets
import rulesets.cauda_equina_syndrome as ces
import rulesets.common as common
def define(r, _p):
    r.derive("boom", present("back_pain"), value=lambda f: 1 / 0)
    r.derive("boom", patient(), value=lambda f: 1 / 0)
    r.derive("boom_chain", fact("boom"))
    r.fire("A", fact("boom_chain"))
broken = module(define)
"""


def test_a_failing_calculation_leaves_out_its_rule_and_keeps_the_others() -> None:
    out = isolated(
        BROKEN
        + """
engine = Engine([common, broken, ces])
facts = ces_saddle("Patient/1") + ces_back("Patient/1")
done = engine.evaluate("Patient/1", facts, NOW, isolate=True)
print([a.rule for a in done.alerts])
print(done.failed)
try:
    engine.evaluate("Patient/2", ces_saddle("Patient/2") + ces_back("Patient/2"), NOW)
except RuleActionError as exc:
    print("raised", type(exc.__cause__).__name__)
"""
    )
    lines = [line for line in out.splitlines() if "rule_calculation_failed" not in line]
    assert lines[0] == "['cauda_equina_syndrome']"
    assert lines[1] == "('test_rule: not evaluated: test_rule.derive.boom.0 raised ZeroDivisionError',)"
    assert lines[2] == "raised ZeroDivisionError"


def test_the_pipeline_reports_the_rule_left_out_and_alerts_the_rest() -> None:
    """Through the pipeline (a replay, a stateless CDS call): an error issue names the rule."""
    out = isolated(
        BROKEN
        + """
rulesets.MODULES = (*rulesets.MODULES, broken)  # before the pipeline imports them
import orjson
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline
pipeline = Pipeline()
(result,) = pipeline.evaluate(read_path(__import__("pathlib").Path(
    "fixtures/cauda_equina_syndrome/tierA-new-ces-condition-alone.json")), parse_now("2025-03-10T12:00:00Z"))
print([a.rule for a in result.alerts])
print([(i.path, i.severity, i.message) for i in result.issues if i.severity == "error"])
"""
    )
    lines = out.splitlines()
    assert lines[-2] == "['cauda_equina_syndrome']"
    assert "test_rule: not evaluated: test_rule.derive.boom.1 raised ZeroDivisionError" in lines[-1]


def test_dependents_follow_derivations_and_score_totals(pipeline: Pipeline) -> None:
    dependents = pipeline.engine._dependents
    assert dependents["fvc_per_kg"] >= {"guillain_barre_syndrome", "myasthenic_crisis_risk"}
    assert "deep_vein_thrombosis" in dependents["wells_item"]  # an item -> its total -> the rule
    assert "acute_stroke_or_tia" in dependents["stroke_lkw_h"]
