"""Rhabdomyolysis rule (docs/rules/rhabdomyolysis.md): computed values, boundaries, exclusions, parameters."""

from __future__ import annotations

from rulesets import rhabdomyolysis as rule

from .lab_rule_helpers import NOW, explain_cli, finding, fixture_alerts, lab, only, with_params

RULE = "rhabdomyolysis"


def alert(pipeline, name: str):
    return only(fixture_alerts(pipeline, RULE, name), RULE)


def severities(pipeline, pid: str, facts: list[dict]) -> list[str]:
    return [a.severity for a in pipeline.engine.evaluate(pid, facts, NOW).alerts if a.rule == RULE]


class TestComputedValues:
    def test_ck_multiple_of_the_laboratory_limit_and_creatinine_rise(self, pipeline) -> None:
        a = alert(pipeline, "tierA-ck-18500-creatinine-rise")
        assert (a.tier, a.severity, a.disorder.code) == ("A", "critical", "240131006")
        # 18500 / 170 = 108.8; creatinine 1.1 -> 1.6 mg/dL x 88.4 = 97.24 -> 141.44 umol/L
        assert (
            "CK 108.8 times the laboratory upper limit (Creatine kinase 18500 U/L on 2025-03-10 07:00)"
            in (a.rationale)
        )
        assert "creatinine rose by 44.2 umol/L within 48 h (KDIGO AKI)" in a.rationale
        assert "Creatinine 97.24 umol/L on 2025-03-09 20:00" in a.rationale

    def test_default_upper_limit_when_the_laboratory_sends_none(self, pipeline) -> None:
        a = alert(pipeline, "tierB-ck-default-uln-myalgia")
        assert "CK 7.5 times the default upper limit 200 U/L (Creatine kinase 1500 U/L" in a.rationale

    def test_ck_in_microkatal_is_converted(self, pipeline) -> None:
        # 150 ukat/L x 60 = 9000 U/L; reference high 3.3 ukat/L = 198 U/L -> 45.5 x
        a = alert(pipeline, "confounder-other-unit")
        assert "CK 45.5 times the laboratory upper limit (Creatine kinase 9000 U/L" in a.rationale

    def test_creatinine_ratio_over_7_days(self, pipeline) -> None:
        a = alert(pipeline, "tierA-creatinine-1.6x-in-7-days")
        assert "creatinine 1.62 times a value of the previous 7 days (KDIGO AKI)" in a.rationale
        assert "rose by" not in a.rationale  # the 80 umol/L value is older than 48 h


class TestBoundaries:
    def test_ck_exactly_five_times_the_limit_counts(self, pipeline) -> None:
        pid = "Patient/ck5"
        myalgia = finding(pid, "myalgia")
        assert severities(pipeline, pid, [lab(pid, "ck", 1000, "U/L", high=200), myalgia]) == ["urgent"]
        assert severities(pipeline, pid, [lab(pid, "ck", 999, "U/L", high=200), myalgia]) == []
        assert severities(pipeline, pid, [lab(pid, "ck", 1000, "U/L"), myalgia]) == ["urgent"]  # default 200

    def test_creatinine_rise_of_exactly_26_5_umol_l_is_aki(self, pipeline) -> None:
        pid = "Patient/aki"
        base = [lab(pid, "ck", 5000, "U/L", high=200), finding(pid, "myalgia")]
        rise = [lab(pid, "creatinine", 100, "umol/L", hours_ago=47), lab(pid, "creatinine", 126.5, "umol/L")]
        assert severities(pipeline, pid, base + rise) == ["critical"]
        small = [lab(pid, "creatinine", 100, "umol/L", hours_ago=47), lab(pid, "creatinine", 126.4, "umol/L")]
        assert severities(pipeline, pid, base + small) == ["urgent"]
        late = [lab(pid, "creatinine", 100, "umol/L", hours_ago=49.5), lab(pid, "creatinine", 140, "umol/L")]
        assert severities(pipeline, pid, base + late) == ["urgent"]  # 1.4 x and outside 48 h

    def test_chronic_elevation_within_20_percent_of_an_old_value(self, pipeline) -> None:
        pid = "Patient/chronic"
        today = [lab(pid, "ck", 2400, "U/L", high=200), finding(pid, "myalgia")]
        old = 24 * 120
        assert severities(pipeline, pid, [*today, lab(pid, "ck", 2000, "U/L", hours_ago=old)]) == []
        assert severities(pipeline, pid, [*today, lab(pid, "ck", 3000, "U/L", hours_ago=old)]) == []
        assert severities(pipeline, pid, [*today, lab(pid, "ck", 1990, "U/L", hours_ago=old)]) == ["urgent"]
        assert severities(pipeline, pid, [*today, lab(pid, "ck", 2400, "U/L", hours_ago=24 * 60)]) == [
            "urgent"
        ]

    def test_troponin_only_counts_near_the_ck_sample(self, pipeline) -> None:
        pid = "Patient/trop"
        base = [lab(pid, "ck", 3000, "U/L", high=200), finding(pid, "myalgia")]
        near = lab(pid, "troponin", 60, "pg/mL", hours_ago=20, high=14)
        far = lab(pid, "troponin", 60, "pg/mL", hours_ago=30, high=14)
        normal = lab(pid, "troponin", 10, "pg/mL", hours_ago=2, high=14)
        flagged = lab(pid, "troponin", 60, "pg/mL", hours_ago=2, interp="H")
        assert severities(pipeline, pid, [*base, near]) == []
        assert severities(pipeline, pid, [*base, far]) == ["urgent"]
        assert severities(pipeline, pid, [*base, normal]) == ["urgent"]
        assert severities(pipeline, pid, [*base, flagged]) == []

    def test_a_recent_diagnosis_is_not_blocked_when_the_ck_is_not_high(self, pipeline) -> None:
        pid = "Patient/dx-mi"
        facts = [
            finding(pid, "rhabdo_dx", 1, src="Condition"),
            finding(pid, "myocardial_infarction", 1, src="Condition"),
            lab(pid, "ck", 500, "U/L", high=200),
        ]
        assert severities(pipeline, pid, facts) == ["urgent"]

    def test_haemolysed_potassium_does_not_escalate(self, pipeline) -> None:
        pid = "Patient/haem"
        base = [lab(pid, "ck", 3000, "U/L", high=200), finding(pid, "myalgia")]
        assert severities(pipeline, pid, [*base, lab(pid, "potassium", 6.0, "mmol/L")]) == ["critical"]
        haem = lab(pid, "potassium", 6.4, "mmol/L", hemolysed=1)
        assert severities(pipeline, pid, [*base, haem]) == ["urgent"]


def test_site_parameters() -> None:
    out = with_params(
        {RULE: {"ck_uln_multiple": 3, "cardiac_exclusion": 0, "ck_uln_default": 100}},
        f"""
        print(tiers({RULE!r}, "nearmiss-ck-3.25x-uln-after-marathon", {RULE!r}))
        print(tiers({RULE!r}, "nearmiss-ck-high-myocardial-infarction", {RULE!r}))
        (a,) = alerts({RULE!r}, "tierB-ck-default-uln-myalgia")
        print(a.rationale.split(": ", 1)[1])
        """,
    )
    lines = out.splitlines()
    assert lines[:2] == ["['urgent']", "['urgent']"]  # 3.25 x ULN now counts; MI no longer excludes
    assert lines[2].startswith("CK 15.0 times the default upper limit 100 U/L")


def test_explain_lists_tiers_parameters_value_sets_and_actions() -> None:
    text = explain_cli(RULE)
    assert "  - A: critical - muscle breakdown with kidney injury or high potassium" in text
    assert "  - B: urgent - acute muscle breakdown" in text
    for name, value in rule.PARAMS.items():
        assert f"  - {name} = {value:g}" in text
    assert "blocks tier A/B when: [rhabdo_ck_high] AND myocardial infarction present" in text
    assert "troponin (High-sensitivity cardiac troponin, in pg/mL)" in text and "loinc.org 89579-7" in text
    assert "ck (Creatine kinase, in U/L) <https://redflags.dev/fhir/ValueSet/ck>" in text
    assert (
        "Renal referral if acute kidney injury (due within 12 h; ServiceRequest; no code) [tier A only]"
        in text
    )
    assert "NO VALUE SET" not in text


class TestSerumMyoglobinNote:
    RAISED = "supporting: serum myoglobin raised (Serum myoglobin {} on 2025-03-10 {})"

    def notes(self, pipeline, pid: str, *extra: dict) -> tuple[str, ...]:
        facts = [lab(pid, "ck", 5000, "U/L", high=200), finding(pid, "myalgia"), *extra]
        (found,) = pipeline.engine.evaluate(pid, facts, NOW).alerts
        assert found.severity == "urgent"  # a note never changes the tier
        return found.notes

    def test_above_the_laboratory_upper_limit_in_ug_per_litre(self, pipeline) -> None:
        a = alert(pipeline, "tierB-ck-myalgia-serum-myoglobin-ug-per-L")
        # 2400 ug/L = 2400 ng/mL (canonical), limit 72 ug/L; the H flag gives the same line once
        assert a.notes == (self.RAISED.format("2400 ng/mL", "07:00"),)
        assert "myoglobin" not in alert(pipeline, "tierB-ck-default-uln-myalgia").rationale.lower()
        assert alert(pipeline, "tierB-ck-default-uln-myalgia").notes == ()

    def test_limit_or_flag_decides(self, pipeline) -> None:
        pid = "Patient/myo"
        above = lab(pid, "serum_myoglobin", 900, "ng/mL", hours_ago=2, high=85)
        assert self.notes(pipeline, pid, above) == (self.RAISED.format("900 ng/mL", "10:00"),)
        normal = lab(pid, "serum_myoglobin", 60, "ng/mL", hours_ago=2, high=85)
        assert self.notes(pipeline, pid, normal) == ()
        unranged = lab(pid, "serum_myoglobin", 900, "ng/mL", hours_ago=2)
        assert self.notes(pipeline, pid, unranged) == ()  # no limit, no flag: not called raised
        positive = lab(pid, "serum_myoglobin", 0, "1", hours_ago=2, interp="POS")
        del positive["v"]
        assert self.notes(pipeline, pid, positive) == (self.RAISED.format("POS", "10:00"),)
        negative = positive | {"interp": "NEG"}
        assert self.notes(pipeline, pid, negative) == ()
        old = lab(pid, "serum_myoglobin", 900, "ng/mL", hours_ago=73, interp="H")
        assert self.notes(pipeline, pid, old) == ()  # older than the CK window (72 h)
        assert self.notes(pipeline, pid) == ()
