"""Acute stroke or transient ischaemic attack (docs/rules/acute_stroke_or_tia.md).

Powers WJ et al., 2019 AHA/ASA guidelines for the early management of acute ischaemic stroke
(thrombolysis within 4.5 h of last known well, thrombectomy up to 24 h in selected patients,
glucose check); NICE NG128; BE-FAST (Aroor 2017).

    lkw = time last known well (latest lkw_time Observation recorded within 7 days), else the
          onset of the earliest deficit
    focal_deficit (any; current, begun within 7 days on its side, i.e. not stable):
        hemiparesis | arm weakness on one side (not both arms) | facial weakness (not on both
        sides, not explained by a Bell's palsy Condition) | speech disturbance
        | leg weakness on one side (left/right, not both legs) not explained by sciatica,
          radicular or leg pain on the SAME side or back pain with no side, within 14 days
          (a nerve-root problem, 3.3; sciatica on the other side explains nothing)
    TIER A (critical) = focal_deficit AND now - lkw <= 24 h
                        (lkw unknown: the earliest deficit began <= 24 h ago)
                      | stroke Condition, current, onset <= 24 h
    TIER B (urgent)   = focal_deficit AND 24 h < now - lkw <= 7 days   (same fallback)
                      | TIA Condition begun within 7 days, resolved or not (disorder: TIA)
                      | a deficit recorded and explicitly absent within 24 h (disorder: TIA)
    Block A: LKW unknown and a focal deficit began more than 24 h ago (that deficit sets LKW;
    the block also covers the stroke-Condition branch).
    Card: "within 4.5 h of LKW (thrombolysis window)", "within 24 h (thrombectomy window,
    selected patients)", BE-FAST extras (ataxia, vision loss, altered consciousness) and
    "low glucose can mimic stroke" when the latest glucose (6 h) < 60 mg/dL, the latest NIHSS
    total (7 days) with its date ("stroke severity: ..."), and an old stroke or stroke sequelae on
    record. None changes the tier.

Old stroke (3.3): a history of stroke silences only a STABLE deficit, one whose key and side were
already recorded more than 7 days before ``now``; such a deficit is no focal deficit in any patient
(chronic hemiparesis is not sudden). A new deficit in a patient with an old stroke is judged as in
any other patient, with the same fallback to its first record when no LKW was recorded
(recurrent strokes are common). A deficit's age is its own side's earliest onset
(engine.prepare ``side_onset_age``), so a new weakness on the other side is new.

Negations ("no nerve-root pain on that side", "LKW not recorded", "no Bell's palsy") are
``unless(...)``: decided once every positive fact is derived, so they never depend on fact order.
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, Cond, Rules, Unless, absent, ever, fact, latest, m, present, ref, unless
from rulesets.codes import ASPIRIN, CT_HEAD, NEUROLOGY_REFERRAL
from rulesets.meta import LOINC, RXNORM, SNOMED, Action, Code, ParamRange, RuleMeta, Tier

TIA = Code(SNOMED, "266257000", "Transient ischemic attack")

META = RuleMeta(
    id="acute_stroke_or_tia",
    version="1.2.0",
    title="Acute stroke or TIA",
    tiers=(
        Tier("A", "critical", "sudden focal deficit within 24 h of last known well"),
        Tier("B", "urgent", "focal deficit within 7 days or transient ischaemic attack"),
    ),
    source_label="AHA/ASA Guidelines for the Early Management of Acute Ischemic Stroke (2019)",
    source_url="https://doi.org/10.1161/STR.0000000000000211",
    disorder=Code(SNOMED, "230690007", "Cerebrovascular accident"),
    actions=(
        Action(
            "Activate the stroke team / neurology now",
            (NEUROLOGY_REFERRAL,),
            "order",
            0.25,
            tiers=("A",),
        ),
        Action(
            "Non-contrast CT head (with CT angiography); door-to-imaging 20 min or less",
            (CT_HEAD,),
            "order",
            1 / 3,
            tiers=("A",),
        ),
        Action(
            "Brain imaging (non-contrast CT head) within 24 h",
            (CT_HEAD,),
            "order",
            24,
            tiers=("B",),
        ),
        Action(
            "Capillary or serum glucose before any thrombolysis",
            (Code(LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma"),),
            "order",
            0.25,
        ),
        Action(
            "IV thrombolysis if eligible and within 4.5 h of last known well; door-to-needle 60 min or less",
            (
                Code(SNOMED, "230934004", "Thrombolysis of intracranial vessel"),
                Code(RXNORM, "1804799", "Alteplase 100 MG Injection"),
            ),
            "medication",
            1,
            tiers=("A",),
        ),
        Action(
            "Mechanical thrombectomy assessment (large-vessel occlusion, up to 24 h in selected patients)",
            (),
            "order",
            0.5,
            tiers=("A",),
        ),
        Action("Swallow screen before any food, drink or tablets", (), "task", 1),
        Action(
            "TIA: aspirin 300 mg now",
            (ASPIRIN,),
            "medication",
            24,
            tiers=("B",),
        ),
        Action(
            "TIA: specialist review within 24 h",
            (NEUROLOGY_REFERRAL,),
            "order",
            24,
            tiers=("B",),
        ),
    ),
)

PARAMS: dict[str, float] = {
    "acute_h": 24,  # hours since LKW (or first deficit record) for tier A
    "lkw_within_d": 7,  # days: an LKW Observation recorded earlier belongs to another episode
    "onset_max_d": 7,  # days: a deficit that began earlier is not this rule (3.3); tier B limit
    "thrombolysis_h": 4.5,  # hours since LKW: IV thrombolysis window (AHA/ASA 2019)
    "thrombectomy_h": 24,  # hours since LKW: thrombectomy window, selected patients (AHA/ASA 2019)
    "radicular_within_d": 14,  # days: sciatica/back/leg pain explaining a weak leg (3.1)
    "dx_within_h": 24,  # hours: stroke Condition onset for tier A
    "tia_within_d": 7,  # days: TIA Condition, or a resolved deficit, for tier B
    "tia_resolved_h": 24,  # hours: deficit explicitly absent within this time = TIA picture
    "old_stroke_d": 30,  # days: a stroke Condition begun earlier is an old stroke (card note only, 3.3)
    "glucose_low_mmol_l": 60 / 18.0,  # mmol/L (= 60 mg/dL): hypoglycaemia mimics stroke
    "glucose_within_h": 6,  # hours: glucose result considered for the card note
    "befast_within_d": 7,  # days: BE-FAST extra signs shown on the card
    "nihss_within_d": 7,  # days: the latest NIHSS total shown on the card (an older one is another episode)
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "acute_h": ParamRange(
        "h", 4.5, 48, "3.1 tier A within 24 h of LKW; never shorter than the thrombolysis window"
    ),
    "lkw_within_d": ParamRange(
        "d", 1, 30, "3.1: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "onset_max_d": ParamRange("d", 1, 30, "3.3 a deficit begun more than 7 days ago is not this rule"),
    "thrombolysis_h": ParamRange(
        "h", 3, 9, "3.2 IV thrombolysis 4.5 h (AHA/ASA 2019; up to 9 h with imaging selection)"
    ),
    "thrombectomy_h": ParamRange("h", 6, 24, "3.2 thrombectomy 6-24 h in selected patients (AHA/ASA 2019)"),
    "radicular_within_d": ParamRange(
        "d", 1, 90, "3.3: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "dx_within_h": ParamRange("h", 1, 72, "3.1 stroke Condition onset within 24 h for tier A"),
    "tia_within_d": ParamRange("d", 1, 30, "3.1 TIA within 7 days: tier B"),
    "tia_resolved_h": ParamRange("h", 1, 48, "3.1 a deficit resolved within 24 h = TIA"),
    "old_stroke_d": ParamRange(
        "d", 7, 365, "3.3 an old stroke begun more than 30 days ago; not shorter than the 7-day onset limit"
    ),
    "glucose_low_mmol_l": ParamRange(
        "mmol/L", 2.2, 4.0, "3.3 hypoglycaemia < 60 mg/dL (3.3 mmol/L) mimics stroke"
    ),
    "glucose_within_h": ParamRange("h", 1, 24, "3.3 glucose at presentation"),
    "befast_within_d": ParamRange(
        "d", 1, 30, "3.1: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "nihss_within_d": ParamRange(
        "d", 1, 30, "3.1: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
}

DEFICITS = ("hemiparesis", "arm_weakness", "facial_weakness", "speech_disturbance", "leg_weakness")
BEFAST = ("ataxia_balance", "vision_loss", "altered_consciousness")
SIDES = ("left", "right")
#: What explains ONE weak leg (3.3): key -> the sides of its record that explain a weak leg on
#: side S ("same" = S). Nerve-root pain on the other side, or of unknown side, explains nothing.
EXPLAINS_WEAK_LEG: dict[str, tuple[str, ...]] = {
    "sciatica": ("same", "bilateral"),
    "radicular_pain": ("same", "bilateral"),
    "leg_pain": ("same", "bilateral"),
    "back_pain": ("same", "bilateral", "unknown"),  # back pain with no side
}

#: How an absence reads in a rationale (the engine appends "(no item recorded)").
NOT_EXPLAINED = "weak {side} leg not explained by nerve-root pain"


def _guards(radicular: float) -> dict[str, Unless]:
    """What must be absent for a deficit to count as focal (3.1/3.3), by deficit (and side)."""
    guards = {
        f"leg_weakness.{side}": unless(
            *(
                present(key, radicular).on(*(side if s == "same" else s for s in sides))
                for key, sides in EXPLAINS_WEAK_LEG.items()
            ),
            fact("bilateral_leg_weakness"),
            text=NOT_EXPLAINED.format(side=side),
        )
        for side in SIDES
    }
    guards["arm_weakness"] = unless(fact("bilateral_arm_weakness"), text="arms not both weak")
    guards["facial_weakness"] = unless(
        present("bells_palsy"),
        fact("bilateral_facial_weakness"),
        text="no Bell's palsy, face not weak on both sides",
    )
    return guards


def _deficits(key: str, base: Cond, guards: dict[str, Unless]) -> list[tuple[Cond | Unless, ...]]:
    """A focal deficit of ``key`` with the guards of 3.1/3.3."""
    if key == "leg_weakness":
        return [(base.on(side), guards[f"{key}.{side}"]) for side in SIDES]
    if key == "arm_weakness":
        return [(base.on(*SIDES), guards[key])]
    if key == "facial_weakness":
        return [(base, guards[key])]
    return [(base,)]


def define(r: Rules, p: dict[str, float]) -> None:
    acute_h = p["acute_h"]
    acute = acute_h * HOUR
    onset_max = p["onset_max_d"] * DAY
    tia_within = p["tia_within_d"] * DAY

    lkw = latest("lkw_time", p["lkw_within_d"] * DAY)
    lkw_unknown = unless(lkw, text="LKW not recorded")
    guards = _guards(p["radicular_within_d"] * DAY)

    # Hours since last known well, from the recorded LKW (its time is the value).
    r.derive(
        "stroke_lkw_h",
        lkw,
        value=lambda f: (f[0]["ts"] + f[0]["age"] - f[0]["v"]) / HOUR,
        text="last known well {v:.1f} h ago",
    )

    # A focal deficit, valued in hours since it began on its side (a stable one never matches).
    for key in DEFICITS:
        for conds in _deficits(key, present(key).begun(up_to=onset_max, on_side=True), guards):
            r.derive(
                "stroke_deficit",
                *conds,
                value=lambda f: f[0]["side_onset_age"] / HOUR,
                text="focal deficit begun {v:.1f} h ago",
            )

    r.fire("A", fact("stroke_deficit"), fact("stroke_lkw_h") <= acute_h)
    r.fire("A", fact("stroke_deficit") <= acute_h, lkw_unknown)
    r.fire(
        "A",
        present("stroke_dx").where(
            m.onset_age <= p["dx_within_h"] * HOUR, f"begun within {p['dx_within_h']:g} h"
        ),
    )
    # LKW unknown: the earliest deficit sets it, so one that began over 24 h ago rules out A.
    r.block(
        "A",
        fact("stroke_deficit") > acute_h,
        lkw_unknown,
        reason="LKW not recorded and the earliest deficit began more than 24 h ago",
    )

    r.fire(
        "B",
        fact("stroke_deficit"),
        (fact("stroke_lkw_h") > acute_h) <= p["onset_max_d"] * 24,
    )
    r.fire("B", fact("stroke_deficit") > acute_h, lkw_unknown)
    r.fire(
        "B",
        ever("tia_dx").where(m.onset_age <= tia_within, f"begun within {p['tia_within_d']:g} days"),
        disorder=TIA,
    )
    # A deficit recorded and explicitly absent within 24 h: symptoms resolved, a TIA picture.
    resolved = p["tia_resolved_h"] * HOUR
    for key in DEFICITS:
        recorded = ever(key).where(m.onset_age <= tia_within, f"begun within {p['tia_within_d']:g} days")
        for conds in _deficits(key, recorded, guards):
            r.derive(
                "stroke_resolved_deficit",
                *conds,
                absent(key).where(
                    (
                        (m.ts > ref(key).ts)
                        & (m.ts <= ref(key).ts + resolved)
                        & ((m.side == ref(key).side) | (m.side == "bilateral"))
                    ),
                    f"within {p['tia_resolved_h']:g} h on the same side",
                ),
                text="deficit resolved within 24 h",
            )
    r.fire("B", fact("stroke_resolved_deficit"), disorder=TIA)

    # Card lines (never change the tier).
    window_tag = "within 4.5 h of LKW (thrombolysis window)"
    late_tag = "within 24 h (thrombectomy window, selected patients)"
    r.note("A", fact("stroke_lkw_h") <= p["thrombolysis_h"], text=window_tag)
    r.note("A", fact("stroke_lkw_h") <= p["thrombectomy_h"], text=late_tag)
    thrombolysis = p["thrombolysis_h"] * HOUR
    r.note("A", fact("stroke_deficit") <= acute_h, lkw_unknown, text=late_tag)
    r.note(
        "A",
        fact("stroke_deficit") <= acute_h,
        lkw_unknown,
        text="LKW not recorded: taken from the first deficit record; confirm it before thrombolysis",
    )
    # 4.5 h only when no deficit at all (even a discounted one) is older
    no_older_deficit = unless(
        *(present(key).begun(above=thrombolysis, up_to=onset_max, on_side=True) for key in DEFICITS),
        text="no deficit begun more than 4.5 h ago",
    )
    r.note(
        "A",
        fact("stroke_deficit") <= p["thrombolysis_h"],
        lkw_unknown,
        no_older_deficit,
        text=window_tag,
    )
    dx_since = present("stroke_dx").where(m.onset_age <= acute, "begun within 24 h")
    r.note("A", dx_since, lkw_unknown, text=late_tag)
    r.note(
        "A",
        present("stroke_dx").where(m.onset_age <= thrombolysis, "begun within 4.5 h"),
        lkw_unknown,
        no_older_deficit,
        text=window_tag,
    )
    r.note(
        ("A", "B"),
        latest("glucose", p["glucose_within_h"] * HOUR) < p["glucose_low_mmol_l"],
        text="low glucose can mimic stroke — treat and reassess ({facts})",
    )
    for key in BEFAST:
        r.note(("A", "B"), present(key, p["befast_within_d"] * DAY), text="BE-FAST: {facts}")
    r.note(("A", "B"), latest("nihss", p["nihss_within_d"] * DAY), text="stroke severity: {facts}")
    # An old stroke never silences a new deficit (3.3); the card says it is on record.
    old_stroke = "previous stroke on record (a new deficit is judged as in any patient): {facts}"
    r.note(("A", "B"), ever("stroke_sequela"), text=old_stroke)
    r.note(("A", "B"), ever("stroke_dx").begun(above=p["old_stroke_d"] * DAY), text=old_stroke)
