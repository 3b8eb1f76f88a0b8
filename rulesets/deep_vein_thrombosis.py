"""Deep vein thrombosis (docs/rules/deep_vein_thrombosis.md).

Two-level Wells score (Wells PS et al., N Engl J Med 2003;349:1227-1235) and the NICE NG158
pathway (2020, updated 2023): "likely" -> proximal leg vein ultrasound within 4 h, "unlikely" ->
D-dimer first; age-adjusted D-dimer cut-off allowed. The seed article lists sudden leg weakness
with a swollen leg from a clot as an emergency.

    window   = 14 days
    leg_sign = leg swelling on ONE side (left or right, not both, not unknown)
               OR calf pain on ONE side
               OR latest(calf circumference difference, 14 d) >= 3 cm
               swelling/pain whose first onset is more than 3 months ago is not acute (5.3);
               a left and a right record make "both sides" (13.2), which is no one-sided sign
    wells    = sum of the 10 items of 5.2 (missing item = 0):
               active cancer +1 | paralysis, paresis (any leg weakness) or leg cast +1 |
               bedridden >= 3 d or major surgery within 12 weeks +1 | deep vein tenderness +1 |
               whole leg swollen (bodySite Lower limb) +1 | calf swelling >= 3 cm +1 |
               pitting oedema of one leg +1 | collateral superficial veins +1 |
               previous DVT (history code, or a DVT diagnosis resolved or older than the window) +1 |
               alternative diagnosis at least as likely -2
    pe_sign  = dyspnoea (24 h) | heart rate > 100/min (6 h) | SpO2 < 94 % (6 h) |
               pleuritic chest pain (24 h) | pulmonary embolism diagnosis (24 h)
    D-dimer  = latest(D-dimer, 24 h); positive when above the cut-off:
               FEU: the laboratory's referenceRange.high if sent, else 0.5 mg/L FEU; for
                    age > 50 (configurable) age x 0.01 mg/L FEU when that is higher;
               DDU: only the laboratory's referenceRange.high (never an FEU number; without a
                    range the result is not interpreted and the card says so)
    TIER A (critical) = (leg_sign | dvt_dx current) AND pe_sign
    TIER B (urgent)   = leg_sign AND wells >= 2
                      | dvt_dx current AND no active anticoagulant
                      | leg_sign AND wells <= 1 AND D-dimer positive   (escalation of C)
    TIER C (routine)  = leg_sign AND wells <= 1, not raised once a final negative D-dimer is there

Must not fire (5.3): both legs equally swollen with no one-sided sign; swelling or pain present
for more than 3 months; a resolved, refuted or entered-in-error DVT Condition (refuted and
entered-in-error never become facts; resolved is not current); a DVT already anticoagulated does
not reach tier B by itself; tier C once a negative D-dimer is available.

"No active anticoagulant" and "not on the other leg" are ``unless(...)``: decided once every
positive fact is derived, so they never depend on the order in which facts arrive.
"""

from __future__ import annotations

from engine.dsl import (
    DAY,
    HOUR,
    WEEK,
    Rules,
    ever,
    fact,
    latest,
    m,
    medication,
    patient,
    present,
    procedure,
    ref,
    unless,
)
from rulesets.codes import ENOXAPARIN, ULTRASOUND
from rulesets.meta import LOINC, RXNORM, SNOMED, SWITCH, Action, Code, ParamOrder, ParamRange, RuleMeta, Tier

D_DIMER_FEU = Code(LOINC, "48065-7", "Fibrin D-dimer FEU [Mass/volume] in Platelet poor plasma")

META = RuleMeta(
    id="deep_vein_thrombosis",
    version="1.2.0",
    title="Deep vein thrombosis",
    tiers=(
        Tier("A", "critical", "leg signs with signs of pulmonary embolism: emergency assessment"),
        Tier("B", "urgent", "DVT likely or D-dimer positive: proximal leg vein ultrasound within 4 h"),
        Tier("C", "routine", "DVT unlikely but not excluded: D-dimer first"),
    ),
    source_label="NICE NG158 Venous thromboembolic diseases (2020, updated 2023); two-level Wells score",
    source_url="https://www.nice.org.uk/guidance/ng158",
    disorder=Code(SNOMED, "128053003", "Deep venous thrombosis"),
    actions=(
        Action(
            "Emergency assessment for pulmonary embolism (PE pathway) now",
            (Code(SNOMED, "59282003", "Pulmonary embolism"),),
            "order",
            1,
            tiers=("A",),
        ),
        Action(
            "Proximal leg vein ultrasound (femoral and popliteal veins of the symptomatic leg) within 4 h",
            (ULTRASOUND,),
            "order",
            4,
            tiers=("B",),
        ),
        Action(
            "If the ultrasound cannot be done within 4 h: D-dimer now",
            (D_DIMER_FEU,),
            "order",
            1,
            tiers=("B",),
        ),
        Action(
            "If the ultrasound cannot be done within 4 h: interim anticoagulation now, scan within 24 h",
            (
                Code(SNOMED, "182764009", "Anticoagulant therapy"),
                Code(RXNORM, "1364430", "apixaban"),
                Code(RXNORM, "1114195", "rivaroxaban"),
                ENOXAPARIN,
            ),
            "medication",
            1,
            tiers=("B",),
        ),
        Action(
            "D-dimer; proximal leg vein ultrasound within 4 h if it is positive",
            (D_DIMER_FEU,),
            "order",
            4,
            tiers=("C",),
        ),
        Action(
            "Wells likely, negative scan and positive D-dimer: repeat the leg vein ultrasound 6-8 days later",
            (ULTRASOUND,),
            "order",
            8 * 24,
            tiers=("B",),
        ),
    ),
)

PARAMS: dict[str, float] = {
    "window_days": 14,  # leg signs, DVT diagnosis and Wells findings (5.1)
    "chronic_days": 90,  # swelling/pain begun more than 3 months ago is not acute (5.3)
    "calf_diff_cm": 3,  # calf circumference difference, cm, 10 cm below the tibial tuberosity (5.2)
    "wells_likely": 2,  # Wells >= 2: DVT likely; <= 1: unlikely (Wells 2003)
    "recent_weeks": 12,  # major surgery / bedridden / plaster cast within 12 weeks (Wells item)
    "dyspnoea_within_h": 24,
    "chest_pain_within_h": 24,
    "pe_dx_within_h": 24,
    "vitals_within_h": 6,
    "heart_rate_max": 100,  # /min: above is a PE sign (5.1)
    "spo2_min": 94,  # %: below is a PE sign (5.1)
    "ddimer_within_h": 24,
    "ddimer_cutoff_feu": 0.5,  # mg/L FEU (= 500 ug/L FEU), NICE NG158, when the lab sends no range
    "ddimer_age_adjust": 1,  # 1 = age-adjusted cut-off for older patients (NICE allows it), 0 = off
    "ddimer_age_above": 50,  # years: age-adjusted cut-off above this age
    "ddimer_age_factor": 0.01,  # mg/L FEU per year of age (age x 0.01)
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "window_days": ParamRange("d", 1, 28, "5.1 leg signs within 14 days; 0 sees nothing"),
    "chronic_days": ParamRange("d", 28, 365, "5.3 swelling begun more than 3 months ago is chronic"),
    "calf_diff_cm": ParamRange("cm", 1, 5, "5.2 Wells: calf > 3 cm larger than the other side"),
    "wells_likely": ParamRange("Wells points", 1, 3, "5.2 Wells 2003: >= 2 likely"),
    "recent_weeks": ParamRange("weeks", 4, 26, "5.2 Wells: surgery or immobilisation within 12 weeks"),
    "dyspnoea_within_h": ParamRange(
        "h", 1, 168, "5.1 PE signs: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "chest_pain_within_h": ParamRange(
        "h", 1, 168, "5.1 PE signs: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "pe_dx_within_h": ParamRange(
        "h", 1, 168, "5.1: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "vitals_within_h": ParamRange("h", 1, 48, "5.1 vital signs describe the patient now"),
    "heart_rate_max": ParamRange("/min", 90, 130, "5.1 tachycardia > 100/min"),
    "spo2_min": ParamRange("%", 88, 97, "5.1 SpO2 < 94 %"),
    "ddimer_within_h": ParamRange("h", 1, 72, "5.1 D-dimer of this presentation"),
    "ddimer_cutoff_feu": ParamRange("mg/L FEU", 0.25, 1.0, "5.1 0.5 mg/L FEU (NICE NG158)"),
    "ddimer_age_adjust": ParamRange(SWITCH, 0, 1, "5.1 1 = age-adjusted cut-off on, 0 = off"),
    "ddimer_age_above": ParamRange("years", 50, 80, "5.1 age-adjusted above 50 years"),
    "ddimer_age_factor": ParamRange(
        "mg/L FEU per year", 0.005, 0.01, "5.1 age x 0.01; more would raise the cut-off beyond the studies"
    ),
}

#: Pairs that must stay ordered (lower < upper) whatever the site sets (redflags.config).
PARAM_ORDER: tuple[ParamOrder, ...] = (
    ParamOrder(
        "window_days", "chronic_days", "signs within the window must be younger than chronic swelling"
    ),
)

#: Wells items scored from a finding (key, points, label); the others are written out below.
WELLS_FINDINGS = (
    ("deep_vein_tenderness", 1, "deep vein tenderness"),
    ("collateral_veins", 1, "collateral superficial veins"),
    ("alt_dx_as_likely", -2, "alternative diagnosis at least as likely"),
)
#: One-sided signs: a finding on the left or on the right, never both (13.2).
ONE_SIDED = (("leg_swelling", "leg swelling"), ("calf_pain", "calf pain"))
OTHER_LEG = {"left": "right", "right": "left"}
PE_FINDINGS = (("dyspnea", "dyspnoea_within_h"), ("chest_pain_pleuritic", "chest_pain_within_h"))
WHOLE_LEG = "61685007"  # SNOMED Lower limb structure: "whole leg swollen"


def _ddimer(r: Rules, p: dict[str, float]) -> None:
    """5.1 D-dimer: the latest result (24 h) against its cut-off.

    The cut-off: FEU, the laboratory's referenceRange.high if sent, else 0.5 mg/L FEU; above 50
    years (age adjustment on) age x 0.01 mg/L FEU when that is higher; DDU, the laboratory's
    limit only. Positive above the cut-off; negative (a final result) not above it.
    """
    within = p["ddimer_within_h"] * HOUR
    cut, above, factor = p["ddimer_cutoff_feu"], p["ddimer_age_above"], p["ddimer_age_factor"]
    feu, ddu = latest("d_dimer", within), latest("d_dimer_ddu", within)
    lab = "with a laboratory upper reference limit"

    def high(f: list[dict]) -> float:
        return f[-1]["high"]

    def fixed(_f: list[dict]) -> float:
        return cut

    # (result, its cut-off, in words, its value, how a positive and a negative result read)
    limits = (
        (
            feu.where(m.has_high == 1, lab),
            m.high,
            "it",
            high,
            "D-dimer above the laboratory limit {v:g} mg/L FEU",
            "D-dimer not above the laboratory limit {v:g} mg/L",
        ),
        (
            feu.where(m.has_high == 0, "without a laboratory range"),
            cut,
            f"{cut:g} mg/L FEU",
            fixed,
            "D-dimer above the cut-off {v:g} mg/L FEU",
            "D-dimer not above the cut-off {v:g} mg/L FEU",
        ),
        (
            ddu.where(m.has_high == 1, lab),
            m.high,
            "it",
            high,
            "D-dimer above the laboratory limit {v:g} mg/L",
            "D-dimer not above the laboratory limit {v:g} mg/L",
        ),
    )
    adjusted = bool(p["ddimer_age_adjust"])
    old = patient().where(m.years > above, f"aged over {above:g}")
    age_cut = ref("patient").years * factor
    for result, limit, words, value, positive, negative in limits:
        over = result.where(m.v > limit, f"above {words}")
        # a preliminary result supports only critical tiers (14.2)
        final = result.where(m.prelim == 0, "(final)")
        r.derive(
            "dvt_ddimer_negative", final.where(m.v <= limit, f"not above {words}"), value=value, text=negative
        )
        if not adjusted or result.key == "d_dimer_ddu":  # DDU: the laboratory's limit only
            r.derive("dvt_ddimer_positive", over, value=value, text=positive)
            continue
        r.derive(
            "dvt_ddimer_positive",
            patient().where(
                m.years.missing() | (m.years <= above), f"aged {above:g} or less or of unknown age"
            ),
            over,
            value=value,
            text=positive,
        )
        r.derive(
            "dvt_ddimer_positive",
            old,
            over.where(m.v > age_cut, f"and above age x {factor:g}"),
            value=lambda f, value=value: max(value(f), f[0]["years"] * factor),
            text="D-dimer above the age-adjusted cut-off {v:g} mg/L FEU",
        )
    if adjusted:
        r.derive(
            "dvt_ddimer_negative",
            old,
            feu.where(m.prelim == 0, "(final)").where(m.v <= age_cut, f"not above age x {factor:g} mg/L FEU"),
            value=lambda f: f[0]["years"] * factor,
            text="D-dimer not above the age-adjusted cut-off {v:g} mg/L FEU",
        )


def define(r: Rules, p: dict[str, float]) -> None:
    window = p["window_days"] * DAY
    chronic = p["chronic_days"] * DAY
    recent = p["recent_weeks"] * WEEK

    # -- one-sided leg signs (5.1): on one leg, unless on the other or on both (13.2) -------------
    for key, words in ONE_SIDED:
        # begun within 3 months on its side: chronic swelling of one leg (or both) hides no new
        # swelling of the other (5.3 "unchanged" is per leg)
        acute = present(key, window).begun(up_to=chronic, on_side=True)
        for side, other in OTHER_LEG.items():
            elsewhere = unless(acute.on(other, "bilateral"), text=f"no {words} on the {other} leg or both")
            r.derive("dvt_leg_sign", acute.on(side), elsewhere)
    r.derive("dvt_leg_sign", latest("calf_circumference_diff", window) >= p["calf_diff_cm"])

    # -- two-level Wells score (5.2) -----------------------------------------------------------
    r.score_item("wells", 1, fact("active_cancer"), label="active cancer")
    paresis = "paralysis, paresis or leg cast"
    r.score_item("wells", 1, fact("any_leg_weakness", window), label=paresis)
    r.score_item("wells", 1, present("leg_cast", recent), label=paresis)
    surgery = "bedridden or recent major surgery"
    r.score_item("wells", 1, present("bedridden_or_recent_surgery", recent), label=surgery)
    r.score_item(
        "wells",
        1,
        procedure("bedridden_or_recent_surgery").where(
            m.age <= recent, f"within {p['recent_weeks']:g} weeks"
        ),
        label=surgery,
    )
    r.score_item(
        "wells",
        1,
        present("leg_swelling", window).where(
            (m.site == WHOLE_LEG) & (m.side != "bilateral"), "of the whole leg"
        ),
        label="whole leg swollen",
    )
    r.score_item(
        "wells",
        1,
        latest("calf_circumference_diff", window) >= p["calf_diff_cm"],
        label=f"calf swelling ≥ {p['calf_diff_cm']:g} cm",
    )
    r.score_item("wells", 1, present("pitting_edema", window).on("left", "right"), label="pitting oedema")
    r.score_item("wells", 1, ever("dvt_history"), label="previous DVT")
    r.score_item(
        "wells",
        1,
        ever("dvt_dx").where((m.cur == 0) | (m.onset_age > window), "resolved or begun before the window"),
        label="previous DVT",
    )
    for key, points, label in WELLS_FINDINGS:
        r.score_item("wells", points, present(key, window), label=label)
    r.score("wells", "Wells score {v:g}")

    # -- signs of pulmonary embolism (tier A) ----------------------------------------------------
    for key, hours in PE_FINDINGS:
        r.derive("dvt_pe_sign", present(key, p[hours] * HOUR))
    r.derive("dvt_pe_sign", present("pe_dx", p["pe_dx_within_h"] * HOUR))
    vitals = p["vitals_within_h"] * HOUR
    r.derive("dvt_pe_sign", latest("heart_rate", vitals) > p["heart_rate_max"])
    r.derive("dvt_pe_sign", latest("spo2", vitals) < p["spo2_min"])

    r.derive("dvt_suspected", fact("dvt_leg_sign"))
    r.derive("dvt_suspected", present("dvt_dx", window))

    _ddimer(r, p)

    likely = p["wells_likely"]
    r.fire("A", fact("dvt_suspected"), fact("dvt_pe_sign"))
    r.fire("B", fact("dvt_leg_sign"), fact("wells") >= likely)
    not_anticoagulated = unless(medication("anticoagulant_active"), text="active anticoagulants: 0")
    r.fire("B", present("dvt_dx", window), not_anticoagulated)
    r.fire("B", fact("dvt_leg_sign"), fact("wells") < likely, fact("dvt_ddimer_positive"))
    r.fire("C", fact("dvt_leg_sign"), fact("wells") < likely)
    r.block(
        "C", fact("dvt_ddimer_negative"), reason="a negative D-dimer is available (DVT unlikely and excluded)"
    )

    # -- card lines ----------------------------------------------------------------------------
    r.note(("A", "B", "C"), fact("wells"), text="{facts}")
    r.note(
        ("B", "C"),
        latest("d_dimer_ddu", p["ddimer_within_h"] * HOUR).where(m.has_high == 0, "without a range"),
        text="D-dimer in DDU without a laboratory reference range is not interpreted (never compared with an "
        "FEU cut-off): {facts}",
    )
