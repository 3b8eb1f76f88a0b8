"""Alcoholic myopathy rule (docs/rules/alcoholic_myopathy.md): suppression, boundaries, notes, parameters."""

from __future__ import annotations

from engine.dsl import DAY
from rulesets import alcoholic_myopathy as rule

from .lab_rule_helpers import NOW, explain_cli, finding, fixture_alerts, lab, only, with_params

RULE = "alcoholic_myopathy"


def rules(pipeline, pid: str, facts: list[dict]) -> list[tuple[str, str]]:
    return sorted((a.rule, a.severity) for a in pipeline.engine.evaluate(pid, facts, NOW).alerts)


def drinker(pid: str, weak_days: float = 60) -> list[dict]:
    return [
        finding(pid, "alcohol_use_disorder", 3000, src="Condition"),
        finding(pid, "proximal_weakness", weak_days, src="Condition"),
    ]


class TestRhabdomyolysisSuppresses:
    def test_declared_for_both_rhabdomyolysis_tiers(self) -> None:
        assert rule.META.suppressed_by == (("rhabdomyolysis", "A", "A"), ("rhabdomyolysis", "B", "A"))

    def test_not_raised_while_rhabdomyolysis_fires_at_either_tier(self, pipeline) -> None:
        pid = "Patient/alc-rhabdo"
        assert rules(pipeline, pid, drinker(pid)) == [(RULE, "routine")]
        muscle = [lab(pid, "ck", 8000, "U/L", high=200), finding(pid, "myalgia")]
        assert rules(pipeline, pid, drinker(pid) + muscle) == [("rhabdomyolysis", "urgent")]
        potassium = lab(pid, "potassium", 6.1, "mmol/L")  # with the weakness: also electrolyte tier B
        assert rules(pipeline, pid, [*drinker(pid), *muscle, potassium]) == [
            ("hypokalemic_or_electrolyte_weakness", "urgent"),
            ("rhabdomyolysis", "critical"),
        ]

    def test_a_blocked_rhabdomyolysis_does_not_suppress(self, pipeline) -> None:
        # A stable chronic CK elevation removes the rhabdomyolysis alert, so the myopathy shows.
        pid = "Patient/alc-chronic-ck"
        ck = [
            lab(pid, "ck", 1500, "U/L", high=200),
            lab(pid, "ck", 1400, "U/L", hours_ago=24 * 200),
            finding(pid, "myalgia"),
        ]
        assert rules(pipeline, pid, drinker(pid) + ck) == [(RULE, "routine")]


class TestBoundaries:
    def test_weakness_must_have_begun_four_weeks_ago(self, pipeline) -> None:
        pid = "Patient/alc-duration"
        assert rules(pipeline, pid, drinker(pid, weak_days=28)) == [(RULE, "routine")]
        assert rules(pipeline, pid, drinker(pid, weak_days=27.9)) == []

    def test_audit_c_eight_or_more_within_twelve_months(self, pipeline) -> None:
        pid = "Patient/alc-audit"
        weak = finding(pid, "pelvic_girdle_weakness", 90, src="Condition")
        assert rules(pipeline, pid, [weak, lab(pid, "audit_c", 8, "1", hours_ago=24 * 364)]) == [
            (RULE, "routine")
        ]
        assert rules(pipeline, pid, [weak, lab(pid, "audit_c", 7, "1")]) == []
        assert rules(pipeline, pid, [weak, lab(pid, "audit_c", 12, "1", hours_ago=24 * 366)]) == []
        assert rules(pipeline, pid, [weak, lab(pid, "audit_total", 20, "1")]) == [(RULE, "routine")]
        assert rules(pipeline, pid, [weak, lab(pid, "audit_total", 19, "1")]) == []

    def test_the_newest_audit_c_decides(self, pipeline) -> None:
        pid = "Patient/alc-audit-newer"
        weak = finding(pid, "proximal_weakness", 90, src="Condition")
        facts = [weak, lab(pid, "audit_c", 10, "1", hours_ago=24 * 100), lab(pid, "audit_c", 5, "1")]
        assert rules(pipeline, pid, facts) == []

    def test_mrc_weakness_dates_from_the_oldest_weak_grade(self, pipeline) -> None:
        pid = "Patient/alc-mrc"
        alcohol = finding(pid, "alcohol_use_disorder", 3000, src="Condition")

        def grade(side: str, v: int, days: float) -> dict:
            return lab(
                pid, "mrc_grade", v, "1", hours_ago=days * 24, side=side, site="hip_flexors", limb="leg"
            )

        recent = [grade("left", 4, 2), grade("right", 3, 2)]
        assert rules(pipeline, pid, [alcohol, *recent]) == []  # weak for 2 days only
        a = only(pipeline.engine.evaluate(pid, [alcohol, *recent, grade("left", 4, 35)], NOW).alerts, RULE)
        assert "MRC grade 4 or less in proximal leg muscles on both sides" in a.rationale
        assert (
            rules(pipeline, pid, [alcohol, grade("left", 4, 2), grade("right", 5, 2), grade("left", 4, 35)])
            == []
        )


def test_supporting_laboratory_values_are_card_notes(pipeline) -> None:
    a = only(fixture_alerts(pipeline, RULE, "tierA-alcohol-dependence-proximal-weakness"), RULE)
    assert (a.tier, a.severity, a.disorder.code) == ("A", "routine", "G72.1")
    assert a.notes == (
        "supporting: Gamma-glutamyl transferase 240 U/L on 2025-03-10 08:00",
        "supporting: Mean corpuscular volume 104 fL on 2025-03-10 08:00",
    )
    assert "AUDIT-C score 10 on 2025-02-01 09:00" in a.rationale
    assert "Proximal muscle weakness (bilateral) since 2024-12-15" in a.rationale


def test_site_parameters() -> None:
    out = with_params(
        {RULE: {"audit_c_min": 6, "duration_min_d": 7}},
        f"""
        print(tiers({RULE!r}, "nearmiss-audit-c-6", {RULE!r}))
        print(tiers({RULE!r}, "nearmiss-weakness-began-2-weeks-ago", {RULE!r}))
        print(tiers({RULE!r}, "nearmiss-polyneuropathy-only", {RULE!r}))
        """,
    )
    assert out.splitlines() == ["['routine']", "['routine']", "[]"]


def test_explain_lists_tier_parameters_value_sets_actions_and_competing_rule() -> None:
    text = explain_cli(RULE)
    assert "  - A: routine - heavy alcohol use with slowly progressive proximal weakness" in text
    for name, value in rule.PARAMS.items():
        assert f"  - {name} = {value:g}" in text
    assert "tier A is not raised while rhabdomyolysis fires at tier A" in text
    assert "tier A is not raised while rhabdomyolysis fires at tier B" in text
    assert "audit_c (AUDIT-C score) <https://redflags.dev/fhir/ValueSet/audit_c>" in text
    assert "sct 1254709001 Referral to substance use disorder treatment program" in text
    assert "rxnorm 10454 thiamine" in text and "NO VALUE SET" not in text
    assert f"begun at least {DAY * 28 / DAY:g} days ago" in text


def test_alcohol_related_polyneuropathy_is_a_card_note(pipeline) -> None:
    pid = "Patient/alc-apn"
    neuropathy = finding(pid, "alcoholic_polyneuropathy", 400, src="Condition")
    a = only(pipeline.engine.evaluate(pid, [*drinker(pid), neuropathy], NOW).alerts, RULE)
    assert a.severity == "routine"  # a note never changes the tier
    assert a.notes == (
        "alcohol-related polyneuropathy also recorded (Alcoholic polyneuropathy since 2024-02-04)",
    )
    assert only(pipeline.engine.evaluate(pid, drinker(pid), NOW).alerts, RULE).notes == ()
    # distal sensory symptoms alone remain a near miss: the note needs the alert (10.2)
    assert fixture_alerts(pipeline, RULE, "nearmiss-polyneuropathy-only") == []
