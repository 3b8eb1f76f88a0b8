"""Rhabdomyolysis (docs/rules/rhabdomyolysis.md).

Bosch X, Poch E, Grau JM, N Engl J Med 2009;361:62-72 (CK > 5 x the upper limit as the usual
laboratory definition); KDIGO Clinical Practice Guideline for Acute Kidney Injury (2012).

    uln    = referenceRange.high of the CK result (U/L), else 200 U/L
    ck     = latest(ck, 72 h)                      # U/L; ukat/L x 60 (15.1)
    muscle = any_leg_weakness | myalgia | generalised weakness | myoglobinuria
             | urine myoglobin positive | fall / long lie | crush injury   (all within 7 d)
    URGENT (B)   = ck >= 5 x uln AND muscle  |  rhabdomyolysis diagnosed within 7 d
    CRITICAL (A) = URGENT AND (aki | latest(potassium, 24 h) >= 6.0 mmol/L)
    aki    = latest creatinine rose >= 26.5 umol/L (0.3 mg/dL) over an earlier value within 48 h
             | latest creatinine >= 1.5 x a value of the previous 7 days           (KDIGO)

Must not fire (12.2), as blocks of both tiers once the CK trigger matched:
  - the CK is cardiac: a myocardial infarction Condition whose onset lies within 24 h of the CK
    sample, or a high-sensitivity troponin above its 99th percentile (referenceRange.high, or an
    H/HH flag) within 24 h of the CK sample (configurable: ``cardiac_exclusion``);
  - stable chronic elevation: the CK is within +/-20 % of a CK recorded more than 3 months ago
    (muscular dystrophy, statin myopathy).
CK between the upper limit and 5 x the upper limit, a CK older than 72 h, cancelled or entered
in error, raise nothing (thresholds, ``latest`` and intake).

Card note (never changes the tier): supporting: latest(serum myoglobin, 72 h) above the
laboratory's upper limit or flagged H/HH/POS.

Choices where the reference is open:
  - every muscle finding must be within 7 days (12.1 gives 7 d for falls and crush injury only);
  - a rhabdomyolysis diagnosis counts when its onset is within 7 days (a still-active problem-list
    entry from years ago does not);
  - the cardiac and chronic exclusions apply only when the CK criterion matched, and then remove
    the whole alert (12.2 "this rule does not fire"), including a coded diagnosis;
  - "within 24 h" of the troponin / infarction is measured from the CK sample; the 99th
    percentile is the troponin's referenceRange.high, or an H/HH interpretation;
  - a potassium on a haemolysed sample does not make the alert critical (as in 7.2);
  - the latest creatinine must be within 72 h; the earlier value within 48 h / 7 days before it.
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, Node, Rules, fact, latest, m, present, ref, result
from rulesets.codes import CREATINE_KINASE, ECG, IV_THERAPY, POTASSIUM
from rulesets.meta import LOINC, SNOMED, SWITCH, Action, Code, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="rhabdomyolysis",
    version="1.2.1",
    title="Rhabdomyolysis",
    tiers=(
        Tier("A", "critical", "muscle breakdown with kidney injury or high potassium"),
        Tier("B", "urgent", "acute muscle breakdown"),
    ),
    source_label=(
        "Bosch X et al., Rhabdomyolysis and acute kidney injury, N Engl J Med 2009; "
        "KDIGO AKI guideline (2012)"
    ),
    source_url="https://doi.org/10.1056/NEJMra0801327",
    disorder=Code(SNOMED, "240131006", "Rhabdomyolysis"),
    actions=(
        Action(
            "Early IV isotonic fluids",
            (IV_THERAPY,),
            "medication",
            0.5,
        ),
        Action(
            "Repeat CK, creatinine and potassium every 6-12 h; urine myoglobin",
            (
                CREATINE_KINASE,
                Code(LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"),
                POTASSIUM,
                Code(LOINC, "2641-9", "Myoglobin [Mass/volume] in Urine"),
            ),
            "order",
            6,
        ),
        Action(
            "ECG if potassium is high",
            (ECG,),
            "order",
            0.5,
        ),
        Action("Stop muscle-toxic drugs (e.g. statins)", (), "task", 0.5),
        Action("Renal referral if acute kidney injury", (), "order", 12, tiers=("A",)),
    ),
)

PARAMS: dict[str, float] = {
    "ck_within_h": 72,  # latest(ck, 72 h)
    "ck_uln_default": 200,  # U/L, when the CK result carries no referenceRange.high
    "ck_uln_multiple": 5,  # CK >= 5 x ULN (Bosch 2009)
    "muscle_within_d": 7,  # muscle involvement findings (fall / crush injury: 7 d in 12.1)
    "dx_within_d": 7,  # rhabdomyolysis diagnosis with onset within 7 d
    "k_critical": 6.0,  # mmol/L, latest potassium ...
    "k_within_h": 24,  # ... within 24 h
    "creatinine_within_h": 72,  # the latest creatinine must be this recent
    "aki_rise_umol_l": 26.5,  # KDIGO: rise >= 0.3 mg/dL (26.5 umol/L) ...
    "aki_rise_window_h": 48,  # ... within 48 h
    "aki_ratio": 1.5,  # KDIGO: >= 1.5 x a value (the lowest) ...
    "aki_baseline_d": 7,  # ... of the previous 7 days
    "cardiac_exclusion": 1,  # 1: a myocardial infarction or raised troponin makes the CK cardiac
    "cardiac_within_h": 24,  # MI onset or troponin within 24 h of the CK sample
    "chronic_older_than_d": 90,  # stable chronic elevation: a CK more than 3 months old ...
    "chronic_tolerance": 0.20,  # ... within +/-20 % of today's CK
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "ck_within_h": ParamRange("h", 6, 168, "12.1 latest CK within 72 h"),
    "ck_uln_default": ParamRange(
        "U/L", 150, 400, "12.1 ULN 200 U/L when the laboratory sends none (reference limits 150-400)"
    ),
    "ck_uln_multiple": ParamRange("x ULN", 3, 10, "12.1 CK >= 5 x ULN (Bosch 2009)"),
    "muscle_within_d": ParamRange("d", 1, 14, "12.1 muscle findings within 7 days"),
    "dx_within_d": ParamRange("d", 1, 14, "12.1 diagnosis within 7 days"),
    "k_critical": ParamRange("mmol/L", 5.5, 7.0, "12.1 K >= 6.0"),
    "k_within_h": ParamRange("h", 1, 72, "12.1 potassium within 24 h"),
    "creatinine_within_h": ParamRange("h", 6, 168, "12.1 latest creatinine within 72 h"),
    "aki_rise_umol_l": ParamRange("umol/L", 20, 50, "12.1 KDIGO rise >= 26.5 umol/L (0.3 mg/dL)"),
    "aki_rise_window_h": ParamRange("h", 24, 72, "12.1 KDIGO: within 48 h"),
    "aki_ratio": ParamRange("x baseline", 1.2, 2.0, "12.1 KDIGO >= 1.5 x baseline"),
    "aki_baseline_d": ParamRange("d", 2, 14, "12.1 KDIGO: baseline of the previous 7 days"),
    "cardiac_exclusion": ParamRange(
        SWITCH, 0, 1, "12.2 1 = MI or raised troponin makes the CK cardiac, 0 = off"
    ),
    "cardiac_within_h": ParamRange("h", 6, 72, "12.2 MI or troponin within 24 h of the CK"),
    "chronic_older_than_d": ParamRange(
        "d", 30, 365, "12.3 a CK more than 3 months old shows chronic elevation"
    ),
    "chronic_tolerance": ParamRange("fraction", 0.05, 0.5, "12.3 within +/-20 % of today's CK"),
}

MUSCLE = ("myalgia", "muscle_weakness_generalized", "myoglobinuria", "fall_long_lie", "crush_injury")
POSITIVE = ("POS", "H", "HH", "A", "AA")
RAISED = ("H", "HH")
MYOGLOBIN_RAISED = ("H", "HH", "POS")
#: Relative slack so that a value exactly on a cut-off (a ratio, or a rise such as 101.7 -> 128.2
#: umol/L = 26.5) is not lost to float rounding (128.2 - 26.5 < 101.7 in binary floating point).
_EPS = 1e-9


def define(r: Rules, p: dict[str, float]) -> None:
    ck = latest("ck", p["ck_within_h"] * HOUR)
    mult, uln = p["ck_uln_multiple"], p["ck_uln_default"]
    muscle_window = p["muscle_within_d"] * DAY

    # CK >= 5 x ULN: the laboratory's upper limit, else the default.
    r.derive(
        "rhabdo_ck_high",
        ck.where(
            (m.has_high == 1) & (m.high > 0) & (m.v >= m.high * mult),
            f"≥ {mult:g} times the laboratory upper limit",
        ),
        value=lambda f: f[0]["v"] / f[0]["high"],
        text="CK {v:.1f} times the laboratory upper limit",
    )
    r.derive(
        "rhabdo_ck_high",
        ck.where(m.has_high == 0, "without a laboratory upper limit") >= mult * uln,
        value=lambda f: f[0]["v"] / uln,
        text=f"CK {{v:.1f}} times the default upper limit {uln:g} U/L",
    )

    # Muscle involvement.
    r.derive("rhabdo_muscle", fact("any_leg_weakness", muscle_window))
    for key in MUSCLE:
        r.derive("rhabdo_muscle", present(key, muscle_window))
    r.derive(
        "rhabdo_muscle",
        latest("urine_myoglobin", p["ck_within_h"] * HOUR).where(m.interp.one_of(*POSITIVE), "positive"),
    )

    r.derive("rhabdo_urgent", fact("rhabdo_ck_high"), fact("rhabdo_muscle"))
    r.derive(
        "rhabdo_urgent",
        present("rhabdo_dx").where(
            m.onset_age <= p["dx_within_d"] * DAY, f"diagnosed within {p['dx_within_d']:g} days"
        ),
    )

    # Acute kidney injury (KDIGO), from the latest creatinine and an earlier one.
    creatinine = latest("creatinine", p["creatinine_within_h"] * HOUR).named("latest")
    rise_window, rise = p["aki_rise_window_h"] * HOUR, p["aki_rise_umol_l"]
    # an earlier creatinine of 0 (or below) is an erroneous value, not a baseline
    earlier = result("creatinine").where(m.v > 0, "(> 0)")
    r.derive(
        "rhabdo_aki",
        creatinine,
        earlier.where(
            (
                (m.ts < ref("latest").ts)
                & (m.ts >= ref("latest").ts - rise_window)
                & (m.v <= ref("latest").v * (1 + _EPS) - rise)
            ),
            f"at least {rise:g} umol/L lower within the {p['aki_rise_window_h']:g} h before it",
        ),
        value=lambda f: f[0]["v"] - f[1]["v"],
        text=f"creatinine rose by {{v:.1f}} umol/L within {p['aki_rise_window_h']:g} h (KDIGO AKI)",
    )
    baseline, ratio = p["aki_baseline_d"] * DAY, p["aki_ratio"]
    r.derive(
        "rhabdo_aki",
        creatinine,
        earlier.where(
            (
                (m.ts < ref("latest").ts)
                & (m.ts >= ref("latest").ts - baseline)
                & (m.v <= ref("latest").v * ((1 + _EPS) / ratio))
            ),
            f"{ratio:g} times lower or less within the {p['aki_baseline_d']:g} days before it",
        ),
        value=lambda f: f[0]["v"] / f[1]["v"],
        text=f"creatinine {{v:.2f}} times a value of the previous {p['aki_baseline_d']:g} days (KDIGO AKI)",
    )

    r.fire("B", fact("rhabdo_urgent"))
    r.fire("A", fact("rhabdo_urgent"), fact("rhabdo_aki"))
    r.fire(
        "A",
        fact("rhabdo_urgent"),
        (latest("potassium", p["k_within_h"] * HOUR) >= p["k_critical"]).where(
            m.hemolysed == 0, "on a sample not marked haemolysed"
        ),
    )

    if p["cardiac_exclusion"]:
        near = p["cardiac_within_h"] * HOUR
        span = f"within {p['cardiac_within_h']:g} h of the CK sample"
        reason = "the CK rise is cardiac (myocardial infarction or raised troponin), not rhabdomyolysis"

        def near_ck(when: Node) -> Node:
            ck_time = ref("rhabdo_ck_high").ts
            return (when >= ck_time - near) & (when <= ck_time + near)

        cardiac = (
            present("myocardial_infarction").where(near_ck(m.onset), f"with its onset {span}"),
            result("troponin").where(
                (m.has_high == 1) & (m.v > m.high) & near_ck(m.ts),
                f"above its 99th percentile (laboratory upper limit) {span}",
            ),
            result("troponin").where(m.interp.one_of(*RAISED) & near_ck(m.ts), f"flagged high {span}"),
        )
        for cond in cardiac:
            r.block(("A", "B"), fact("rhabdo_ck_high"), cond, reason=reason)

    # Card line (never changes the tier): a raised serum myoglobin supports muscle breakdown.
    myoglobin = latest("serum_myoglobin", p["ck_within_h"] * HOUR)
    raised = "supporting: serum myoglobin raised ({facts})"
    r.note(
        ("A", "B"),
        myoglobin.where((m.has_high == 1) & (m.v > m.high), "above the laboratory upper limit"),
        text=raised,
    )
    flagged = myoglobin.where(m.interp.one_of(*MYOGLOBIN_RAISED), "flagged H, HH or POS")
    r.note(("A", "B"), flagged, text=raised)

    old, tolerance = p["chronic_older_than_d"] * DAY, p["chronic_tolerance"]
    r.block(
        ("A", "B"),
        fact("rhabdo_ck_high"),
        ck,
        result("ck")
        .where(m.age > old, f"recorded more than {p['chronic_older_than_d']:g} days ago,")
        .where(m.v >= ref("ck").v * ((1 - _EPS) / (1 + tolerance)), "today's CK within")
        .where(
            m.v <= ref("ck").v * ((1 + _EPS) / (1 - tolerance)),
            f"±{tolerance * 100:g} % of it",
        ),
        reason="long-standing stable CK elevation (muscular dystrophy, statin myopathy), not acute",
    )
