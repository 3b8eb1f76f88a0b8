"""Myasthenic crisis risk (docs/rules/myasthenic_crisis_risk.md).

International consensus guidance for management of myasthenia gravis (Sanders 2016) and its
2020 update (Narayanaswami 2021); MGFA classification; respiratory cut-offs as for GBS (Lawn
2001, "20/30/40").

    known_mg    = myasthenia gravis Condition current (active/recurrence/relapse, not refuted;
                  an MG exacerbation or crisis diagnosis is a diagnosis of MG too)
                  OR latest AChR antibodies (LOINC 11034-6) above the laboratory's upper limit
                  (referenceRange.high; without one, above the site parameter)
    worsening   = progression of weakness (0.2) within 14 d
                  OR MG exacerbation diagnosis with onset/recording within 14 d
                  OR new leg weakness (any_leg_weakness findings) or arm weakness, first onset
                  within 14 d
    bulbar      = dysphagia OR dysarthria/speech disturbance (72 h)
    ocular      = ptosis OR diplopia (72 h)               -- shown on the card, never a tier
    respiratory = FVC < 20 mL/kg OR FVC fell >= 30 % from an earlier FVC of the episode (14 d)
                  OR MIP weaker than -30 cmH2O (24 h)
                  OR dyspnoea, orthopnoea or respiratory failure (72 h)
    TIER A (critical) = known_mg AND (respiratory OR (bulbar AND worsening))
                        OR myasthenic crisis diagnosed (onset/recording) within 7 d
    TIER B (urgent)   = known_mg AND worsening
    Card notes (6.2, never change the tier): infection within 14 d (fever, recent infection);
    a drug of a class that can worsen MG ordered/started within 14 d (configurable class list:
    one value set per class, ``TRIGGER_DRUG_CLASSES``); ocular signs.

Must not fire (6.3): stable long-standing ocular MG (no worsening, no bulbar/respiratory
finding); tiredness without objective weakness; acute weakness without MG evidence; refuted or
entered-in-error MG; a cancelled FVC or one with dataAbsentReason (never becomes a fact).
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, Cond, Rules, Test, ever, fact, latest, m, new, present
from rulesets.codes import APHERESIS, FVC, ICU_REFERRAL, IVIG, NEUROLOGY_REFERRAL, RESPIRATORY_FUNCTION
from rulesets.meta import SNOMED, Action, Code, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="myasthenic_crisis_risk",
    version="1.2.0",
    title="Myasthenic crisis risk",
    tiers=(
        Tier("A", "critical", "respiratory or bulbar failure in myasthenia gravis"),
        Tier("B", "urgent", "worsening myasthenia gravis"),
    ),
    source_label="International consensus guidance for management of myasthenia gravis "
    "(Sanders 2016; 2020 update)",
    source_url="https://doi.org/10.1212/WNL.0000000000002790",
    disorder=Code(SNOMED, "80976008", "Myasthenic crisis"),
    actions=(
        Action(
            "ICU/HDU review now; prepare for non-invasive or invasive ventilation",
            (
                ICU_REFERRAL,
                Code(SNOMED, "428311008", "Non-invasive ventilation"),
            ),
            "order",
            1,
            tiers=("A",),
        ),
        Action(
            "Serial respiratory function: FVC (with MIP) every 2-4 h while unstable",
            (
                RESPIRATORY_FUNCTION,
                FVC,
            ),
            "order",
            2,
        ),
        Action(
            "Neurology referral (same day)",
            (NEUROLOGY_REFERRAL,),
            "order",
            12,
        ),
        Action(
            "Rescue immunotherapy: IVIG or plasma exchange, decided by the neurologist",
            (IVIG, APHERESIS),
            "medication",
            24,
        ),
        Action(
            "Review and stop or avoid drugs that can worsen myasthenia gravis; treat infection",
            (),
            "task",
            1,
        ),
    ),
)

PARAMS: dict[str, float] = {
    "worsening_within_d": 14,  # progression, exacerbation diagnosis, new limb weakness (6.1)
    "crisis_dx_within_d": 7,  # myasthenic crisis diagnosis (onset/recorded) -> tier A
    "symptom_within_h": 72,  # bulbar, ocular and breathing findings
    "fvc_per_kg_min": 20,  # mL/kg ("20" of 20/30/40, Lawn 2001)
    "fvc_drop_fraction": 0.30,  # fall of the latest FVC from an earlier FVC of the episode
    "fvc_episode_d": 14,  # how far back that earlier FVC may lie
    "mip_min_abs": 30,  # cmH2O ("30"): MIP weaker than -30
    # AChR antibodies: upper limit used only when the laboratory sends no referenceRange.high.
    # nmol/L; radioimmunoassay kits call > 0.5 nmol/L positive (0.25-0.5 borderline): confirm locally.
    "achr_ab_uln_nmol_l": 0.5,
    "trigger_within_d": 14,  # infection / new drug shown as a possible trigger (6.2)
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "worsening_within_d": ParamRange("d", 1, 30, "6.1 worsening within 14 days"),
    "crisis_dx_within_d": ParamRange("d", 1, 30, "6.1 crisis diagnosis within 7 days"),
    "symptom_within_h": ParamRange(
        "h",
        1,
        168,
        "6.1 bulbar/breathing findings: look-back window; 0 sees nothing, much longer mixes in old episodes",
    ),
    "fvc_per_kg_min": ParamRange(
        "mL/kg", 10, 30, "6.1 '20/30/40' rule: 20 mL/kg; 10-30 spans the published intubation cut-offs"
    ),
    "fvc_drop_fraction": ParamRange("fraction", 0.1, 0.5, "6.1 fall >= 30 %; 0 would call any repeat a fall"),
    "fvc_episode_d": ParamRange("d", 1, 30, "6.1 an earlier FVC of the same episode"),
    "mip_min_abs": ParamRange("cmH2O", 20, 60, "6.1 '20/30/40': MIP weaker than -30 cmH2O"),
    "achr_ab_uln_nmol_l": ParamRange(
        "nmol/L", 0.2, 1.0, "6.1 RIA kits: > 0.5 nmol/L positive, 0.25-0.5 borderline"
    ),
    "trigger_within_d": ParamRange("d", 1, 90, "6.2 new drug or infection within 14 days"),
}

#: Drug classes that can worsen MG (6.2): one value set each, a site extends them with its own
#: ValueSet files; ``mg_worsening_drug`` holds the drugs of no listed class.
TRIGGER_DRUG_CLASSES = (
    "mg_drug_aminoglycoside",
    "mg_drug_beta_blocker",
    "mg_drug_fluoroquinolone",
    "mg_drug_macrolide",
    "mg_drug_magnesium_iv",
    "mg_drug_checkpoint_inhibitor",
    "mg_worsening_drug",
)
MG_DIAGNOSES = ("mg_dx", "mg_exacerbation_dx", "mg_crisis_dx")
NEW_WEAKNESS = ("leg_weakness", "paraplegia_paraparesis", "hemiparesis", "arm_weakness")
BULBAR = ("dysphagia", "speech_disturbance")
OCULAR = ("ptosis", "diplopia")
BREATHING = ("dyspnea", "orthopnea", "respiratory_failure")
INFECTION = ("fever", "recent_infection")


def _ordered_within(key: str, seconds: float, days: float) -> Cond:
    """A medication record of ``key`` authored/started within the window, whatever its status
    now (a completed course or a single IV dose can still have triggered the flare)."""
    return Cond(
        "medication",
        key,
        (Test(m.age <= seconds),),
        f"{key.replace('_', ' ')} ordered or given within {days:g} days",
    )


def define(r: Rules, p: dict[str, float]) -> None:
    worsening_w = p["worsening_within_d"] * DAY
    symptom_w = p["symptom_within_h"] * HOUR
    trigger_w = p["trigger_within_d"] * DAY

    # known MG
    for key in MG_DIAGNOSES:
        r.derive("mg_known", present(key))
    r.derive(
        "mg_known",
        latest("achr_ab").where(
            (m.has_high == 1) & (m.v > m.high),
            "above the laboratory's upper limit",
        ),
        text="AChR antibodies above the laboratory upper limit",
    )
    r.derive(
        "mg_known",
        latest("achr_ab").where(
            (m.has_high == 0) & (m.v > p["achr_ab_uln_nmol_l"]),
            f"above {p['achr_ab_uln_nmol_l']:g} nmol/L (no laboratory range sent)",
        ),
        text=f"AChR antibodies above {p['achr_ab_uln_nmol_l']:g} nmol/L",
    )

    # worsening
    r.derive("mg_worsening", fact("weakness_progression", worsening_w))
    r.derive(
        "mg_worsening",
        present("mg_exacerbation_dx").where(
            m.onset_age <= worsening_w,
            f"with onset or recording within {p['worsening_within_d']:g} days",
        ),
    )
    for key in NEW_WEAKNESS:  # new on its side: an old weakness of one limb hides no new one
        r.derive("mg_worsening", new(key, worsening_w, on_side=True))

    for key in BULBAR:
        r.derive("mg_bulbar", present(key, symptom_w))

    # respiratory: shared definitions in common.py, thresholds here
    r.derive("mg_respiratory", fact("fvc_per_kg") < p["fvc_per_kg_min"])
    r.derive(
        "mg_respiratory",
        fact("resp_fvc_fall", p["fvc_episode_d"] * DAY) >= 100 * p["fvc_drop_fraction"],
    )
    r.derive("mg_respiratory", fact("resp_mip_abs") < p["mip_min_abs"])
    for key in BREATHING:
        r.derive("mg_respiratory", present(key, symptom_w))

    r.fire("A", fact("mg_known"), fact("mg_respiratory"))
    r.fire("A", fact("mg_known"), fact("mg_bulbar"), fact("mg_worsening"))
    r.fire(
        "A",
        present("mg_crisis_dx").where(
            m.onset_age <= p["crisis_dx_within_d"] * DAY,
            f"with onset or recording within {p['crisis_dx_within_d']:g} days",
        ),
    )
    r.fire("B", fact("mg_known"), fact("mg_worsening"))

    # Card notes (6.2): possible triggers and ocular signs; they never change the tier.
    for key in INFECTION:  # current, or resolved within the window (0.2 present for a state)
        r.note(
            ("A", "B"),
            ever(key).where(m.age <= trigger_w, f"within {p['trigger_within_d']:g} days"),
            text="possible trigger, infection: {facts}",
        )
    for key in TRIGGER_DRUG_CLASSES:
        r.note(
            ("A", "B"),
            _ordered_within(key, trigger_w, p["trigger_within_d"]),
            text="possible trigger, new drug that can worsen myasthenia gravis: {facts}",
        )
    for key in OCULAR:
        r.note(("A", "B"), present(key, symptom_w), text="ocular signs: {facts}")


__all__ = ["META", "PARAMS", "TRIGGER_DRUG_CLASSES", "define"]
