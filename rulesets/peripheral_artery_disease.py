"""Peripheral artery disease (docs/rules/peripheral_artery_disease.md).

Gornik HL et al., 2024 ACC/AHA/AACVPR/APMA/ABC/SCAI/SVM/SVN/SVS/SIR/VESS Guideline for the
Management of Lower Extremity Peripheral Artery Disease, Circulation 2024;149:e1313-e1410 (ABI
categories, who to test, CLTI, acute limb ischaemia); NICE CG147. Seed article: PAD "typically
develops after age 50", weakness worse with exertion.

    exertional = present(intermittent claudication | exertional leg weakness, 12 months)
    abi        = latest(ABI left, 24 months), latest(ABI right, 24 months); an older ABI is missing
    age_gate   = age > 50, or a current PAD diagnosis on record (parameter; 9.2)
    ROUTINE  (tier C, info)     = age_gate AND exertional AND
                                  ( any leg ABI <= 0.90 | ABI missing for a leg | any ABI > 1.40 |
                                    a current PAD diagnosis )
                                  card: ABI missing -> request a resting ABI;
                                        ABI > 1.40 -> non-compressible, request a toe-brachial index
    URGENT   (tier B, warning)  = present(rest pain, 30 d) | present(leg ulcer or gangrene)
                                  | any leg ABI < 0.40
    CRITICAL (tier A, critical) = new(acute limb ischaemia, 14 d): sudden pain with pallor,
                                  coldness, pulselessness, numbness or paralysis of one leg

ABI per leg: <= 0.90 abnormal; 0.91-0.99 borderline; 1.00-1.40 normal; > 1.40 non-compressible.

Card notes (never change the tier):
    PAD risk factor on record: present(type 2 diabetes) (any tier)
    PAD risk factor on record: present(smoker, 24 months) (any tier)
    present(neurogenic claudication, 12 months) -> spinal stenosis may explain exertional leg
        symptoms (9.2) (routine tier; shown only when the alert fires anyway: abnormal, missing
        or non-compressible ABI, or a PAD diagnosis)

Must not fire (9.2): neurogenic claudication (on standing, eased by sitting) with a normal ABI
(neither finding is an exertional PAD sign and a normal ABI of both legs meets no branch); age 50
or less without a PAD diagnosis (routine tier; the urgent and critical tiers are emergencies at
any age); ABI 0.91-1.40 in both legs; calf pain at rest with a swollen leg (no PAD criterion reads
calf pain or swelling: that is deep_vein_thrombosis); a resolved, refuted or entered-in-error PAD
Condition; an ABI older than 24 months.

"ABI missing for a leg" is ``unless(latest ABI of that leg)``, one per leg, decided once every
positive fact is derived; the card asks for the ABI of the leg that has none.
"""

from __future__ import annotations

from engine.dsl import DAY, Rules, fact, latest, m, new, patient, present, unless
from rulesets.codes import ASPIRIN
from rulesets.meta import FINDING_SYSTEM, SNOMED, SWITCH, Action, Code, ParamOrder, ParamRange, RuleMeta, Tier

ROUTINE_HOURS = 14 * 24  # "routine": days to weeks (0.3)
VASCULAR_REFERRAL = Code(SNOMED, "307777008", "Referral to vascular surgeon")

META = RuleMeta(
    id="peripheral_artery_disease",
    version="1.3.0",
    title="Peripheral artery disease",
    tiers=(
        Tier("A", "critical", "acute limb ischaemia: emergency vascular assessment"),
        Tier("B", "urgent", "chronic limb-threatening ischaemia: urgent vascular referral"),
        Tier("C", "routine", "exertional leg symptoms with abnormal or missing ABI"),
    ),
    source_label="2024 ACC/AHA multisociety guideline: lower extremity peripheral artery disease",
    source_url="https://doi.org/10.1161/CIR.0000000000001251",
    disorder=Code(SNOMED, "399957001", "Peripheral arterial occlusive disease"),
    actions=(
        Action(
            "Resting ankle-brachial index of both legs (toe-brachial index if an ABI is above 1.40)",
            (
                Code(FINDING_SYSTEM, "abi_left", "Ankle-brachial index, left"),
                Code(FINDING_SYSTEM, "abi_right", "Ankle-brachial index, right"),
            ),
            "order",
            ROUTINE_HOURS,
        ),
        Action(
            "Emergency vascular surgery referral (acute limb ischaemia)",
            (VASCULAR_REFERRAL,),
            "order",
            1,
            ("A",),
        ),
        Action(
            "Urgent vascular surgery referral (rest pain, ulcer or gangrene)",
            (VASCULAR_REFERRAL,),
            "order",
            24,
            ("B",),
        ),
        Action("Vascular surgery referral", (VASCULAR_REFERRAL,), "order", ROUTINE_HOURS, ("C",)),
        Action(
            "Antiplatelet and lipid-lowering therapy; risk-factor control (smoking, diabetes)",
            (ASPIRIN,),
            "medication",
            ROUTINE_HOURS,
        ),
        Action("Supervised exercise programme", (), "order", ROUTINE_HOURS),
    ),
)

PARAMS: dict[str, float] = {
    "exertional_within_months": 12,  # claudication / exertional weakness recorded within 12 months
    "abi_within_months": 24,  # an older ABI is missing (9.2)
    "abi_abnormal_max": 0.90,  # ABI <= 0.90 abnormal (ACC/AHA 2024)
    "abi_noncompressible_above": 1.40,  # ABI > 1.40 non-compressible: ask for a toe-brachial index
    "abi_severe_below": 0.40,  # ABI < 0.40 severe ischaemia: urgent
    "age_above": 50,  # years: routine tier only above this age (seed article)
    "pad_dx_waives_age": 1,  # 1 = a PAD diagnosis with exertional symptoms fires at any age (9.1, 9.2)
    "rest_pain_within_d": 30,
    "acute_within_d": 14,  # acute limb ischaemia: sudden, within 14 days
    "smoker_within_months": 24,  # card note: a smoking record older than this is not current
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "exertional_within_months": ParamRange("months", 1, 36, "9.1 exertional symptoms within 12 months"),
    "abi_within_months": ParamRange("months", 6, 60, "9.2 ABI older than 24 months is missing"),
    "abi_abnormal_max": ParamRange("ABI", 0.8, 1.0, "9.1 ABI <= 0.90 abnormal (ACC/AHA 2024)"),
    "abi_noncompressible_above": ParamRange("ABI", 1.3, 1.5, "9.1 ABI > 1.40 non-compressible"),
    "abi_severe_below": ParamRange("ABI", 0.3, 0.5, "9.1 ABI < 0.40 severe ischaemia"),
    "age_above": ParamRange("years", 18, 80, "9.2 age > 50 gate (seed article; configurable)"),
    "pad_dx_waives_age": ParamRange(SWITCH, 0, 1, "9.2 1 = a PAD diagnosis fires at any age, 0 = off"),
    "rest_pain_within_d": ParamRange("d", 1, 90, "9.1 rest pain within 30 days"),
    "acute_within_d": ParamRange("d", 1, 28, "9.3 acute limb ischaemia: sudden, within 14 days"),
    "smoker_within_months": ParamRange("months", 1, 60, "9.4 card note: current smoking"),
}

#: Pairs that must stay ordered (lower < upper) whatever the site sets (redflags.config).
PARAM_ORDER: tuple[ParamOrder, ...] = (
    ParamOrder("abi_severe_below", "abi_abnormal_max", "a severe ABI is lower than an abnormal one"),
    ParamOrder(
        "abi_abnormal_max",
        "abi_noncompressible_above",
        "the normal ABI band lies between abnormal and non-compressible",
    ),
)

ABI = ("abi_left", "abi_right")
EXERTIONAL = ("intermittent_claudication", "exertional_leg_weakness")


def _months(n: float) -> float:
    """A window of ``n`` months in whole days (12 months = 365 days)."""
    return round(n * 365.25 / 12) * DAY


def define(r: Rules, p: dict[str, float]) -> None:
    abi_window = _months(p["abi_within_months"])
    months = f"{p['abi_within_months']:g} months"

    age = p["age_above"]
    r.derive(
        "pad_age_gate",
        patient().where(m.years > age, f"aged over {age:g}"),
        value=lambda f: f[0]["years"],
        text="age {v:g}",
    )
    if p["pad_dx_waives_age"]:
        r.derive("pad_age_gate", present("pad_dx"))

    for key in EXERTIONAL:
        r.derive("pad_exertional", present(key, _months(p["exertional_within_months"])))

    for key in ABI:
        leg = latest(key, abi_window)
        r.derive("pad_abi_not_normal", leg <= p["abi_abnormal_max"])
        r.derive("pad_abi_not_normal", leg > p["abi_noncompressible_above"])
        r.fire("B", leg < p["abi_severe_below"])
        r.note(
            ("A", "B", "C"),
            leg > p["abi_noncompressible_above"],
            text=f"ABI above {p['abi_noncompressible_above']:g} (non-compressible arteries, unreliable): "
            "request a toe-brachial index ({facts})",
        )

    # Routine: exertional symptoms over the age gate with an abnormal, missing or unreliable ABI,
    # or with PAD already diagnosed.
    r.fire("C", fact("pad_age_gate"), fact("pad_exertional"), fact("pad_abi_not_normal"))
    for key in ABI:
        side = key[4:]
        no_abi = unless(latest(key, abi_window), text=f"no ABI of the {side} leg in the last {months}")
        r.fire("C", fact("pad_age_gate"), fact("pad_exertional"), no_abi)
        r.note(
            "C",
            no_abi,
            text=f"Ankle-brachial index of the {side} leg missing (none in the last {months}): "
            "request a resting ABI",
        )
    r.fire("C", fact("pad_age_gate"), fact("pad_exertional"), present("pad_dx"))

    # Urgent: chronic limb-threatening ischaemia (ABI < 0.40 above).
    r.fire("B", present("rest_pain_pad", p["rest_pain_within_d"] * DAY))
    r.fire("B", present("limb_ulcer_or_gangrene"))

    # Critical: acute limb ischaemia (the "6 Ps").
    r.fire("A", new("acute_limb_ischaemia", p["acute_within_d"] * DAY, on_side=True))  # per leg

    # Card lines (never change the tier): risk factors, and spinal stenosis as an alternative.
    risk = "PAD risk factor on record: {facts}"
    r.note(("A", "B", "C"), present("diabetes"), text=risk)
    r.note(("A", "B", "C"), present("smoker", _months(p["smoker_within_months"])), text=risk)
    r.note(
        "C",
        present("neurogenic_claudication", _months(p["exertional_within_months"])),
        text="neurogenic claudication on record ({facts}): spinal stenosis may explain exertional "
        "leg symptoms (9.2)",
    )
