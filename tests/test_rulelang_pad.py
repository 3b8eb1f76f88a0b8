"""peripheral_artery_disease 1.3.0: "ABI missing for a leg" is ``unless()`` per leg.

docs/rules/peripheral_artery_disease.md, routine tier: exertional leg symptoms over the age gate
with an ABI missing for a leg. The card asks for the ABI of the leg that has none, and the
rationale names that leg instead of a count of legs.
"""

from __future__ import annotations

from redflags.pipeline import Pipeline

from .test_rulelang_bad_values import changed, evaluate_alerts, fixture

RULE = "peripheral_artery_disease"
ASK = "leg missing (none in the last 24 months): request a resting ABI"


def test_one_leg_without_an_abi_is_named_on_the_card(pipeline: Pipeline) -> None:
    both = fixture(RULE, "tierC-claudication-abi-072")  # right 0.72, left 0.95
    (alert,) = [a for a in evaluate_alerts(pipeline, changed(both, abi_right=None)) if a.rule == RULE]
    assert alert.tier == "C"
    assert "no ABI of the right leg in the last 24 months" in alert.rationale
    assert "left leg" not in alert.rationale  # the left one was measured: 0.95, not abnormal
    assert f"Ankle-brachial index of the right {ASK}" in alert.notes
    assert not any("left leg missing" in note for note in alert.notes)


def test_an_abi_on_both_legs_asks_for_none(pipeline: Pipeline) -> None:
    (alert,) = [
        a for a in evaluate_alerts(pipeline, fixture(RULE, "tierC-claudication-abi-072")) if a.rule == RULE
    ]
    assert not any(ASK in note for note in alert.notes)
