"""Guillain-Barré syndrome (docs/rules/guillain_barre_syndrome.md).

Brighton Collaboration case definition (Sejvar 2011), EAN/PNS guideline (van Doorn 2023),
EGRIS (Walgaard 2010) and the "20/30/40" rule (Lawn 2001).

    core      = (bilateral leg weakness | paraplegia/paraparesis | weakness of both legs and
                 both arms) AND (reflexes absent | reduced) AND 12 h <= weakness onset <= 28 d
                 unless a sensory level, hyperreflexia or spasticity is present (28 d): that
                 picture belongs to spinal_cord_compression (0.3a)
    dx_branch = GBS diagnosis with onset/recorded within 28 d
    respiratory red flag = FVC < 20 mL/kg | FVC fell >= 30 % from the episode's first FVC |
                 MIP weaker than -30 cmH2O | MEP < 40 cmH2O (24 h) | dysphagia, dyspnoea or
                 orthopnoea (72 h) | bilateral facial weakness (72 h) | EGRIS >= 5 |
                 respiratory failure (72 h)
    TIER A (critical) = (core | dx_branch) AND respiratory red flag
    TIER B (urgent)   = (core | dx_branch)

Card notes (never change the tier): supportive features (progression/ascending weakness,
infection in the 6 weeks before onset, paraesthesia, CSF protein > 45 mg/dL with < 50 cells/uL);
CSF white cells >= 50 /uL argue against GBS (never supportive); GBS disability score >= 3 means
immunotherapy is indicated (2.2). A normal CSF protein never suppresses the alert.

Choices where the reference leaves room:
- The episode starts at the earliest onset of the qualifying weakness (core) or at the GBS
  diagnosis onset (dx_branch); its first FVC is the first result taken since then. The weakness
  dates from the records that make it bilateral (``common._began``): an old weakness of one leg
  (a foot drop) does not make a new weakness of both legs "slowly progressive over months".
- EGRIS scores "days from weakness onset to admission" as days from onset to the evaluation
  time: section 13 has no admission time. Evaluated on the admission day they agree; later the
  onset points can only fall, so EGRIS errs low and the other red flags carry the alert.
- The cord-sign exclusion is a block, which removes the alert also when a GBS diagnosis is
  coded (2.1 excludes only the core branch); such a patient meets spinal_cord_compression A5
  (bilateral weakness with an upper-motor-neurone sign), which keeps the emergency visible.
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, WEEK, Rules, absent, ever, fact, latest, m, present, ref, result
from rulesets.codes import (
    APHERESIS,
    CSF_CELL_COUNT,
    CSF_PROTEIN,
    ECG,
    ENOXAPARIN,
    FVC,
    ICU_REFERRAL,
    IVIG,
    LUMBAR_PUNCTURE,
    NEUROLOGY_REFERRAL,
    RESPIRATORY_FUNCTION,
)
from rulesets.meta import SNOMED, Action, Code, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="guillain_barre_syndrome",
    version="1.2.1",
    title="Guillain-Barré syndrome",
    tiers=(
        Tier("A", "critical", "respiratory or bulbar danger"),
        Tier("B", "urgent", "ascending flaccid weakness with lost reflexes"),
    ),
    source_label="EAN/PNS guideline on Guillain-Barré syndrome (2023); Brighton criteria",
    source_url="https://doi.org/10.1111/ene.16073",
    disorder=Code(SNOMED, "40956001", "Guillain-Barré syndrome"),
    actions=(
        Action(
            "Serial respiratory function: FVC (with MIP/MEP) every 4-6 h while progressing",
            (
                RESPIRATORY_FUNCTION,
                FVC,
            ),
            "order",
            4,
        ),
        Action(
            "ICU/HDU assessment now",
            (
                ICU_REFERRAL,
                Code(SNOMED, "309904001", "Intensive care"),
            ),
            "order",
            1,
            tiers=("A",),
        ),
        Action(
            "Neurology referral (same day)",
            (NEUROLOGY_REFERRAL,),
            "order",
            12,
        ),
        Action(
            "Lumbar puncture: CSF protein and cell count",
            (
                LUMBAR_PUNCTURE,
                CSF_PROTEIN,
                CSF_CELL_COUNT,
            ),
            "order",
            24,
        ),
        Action("Nerve conduction studies / EMG", (), "order", 72),
        Action(
            "Immunotherapy if unable to walk unaided (IVIG within 2 weeks or plasma exchange "
            "within 4 weeks of onset), decided by the neurologist",
            (IVIG, APHERESIS),
            "medication",
            24,
        ),
        Action(
            "Cardiac and blood-pressure monitoring for autonomic instability",
            (ECG,),
            "order",
            1,
        ),
        Action("VTE prophylaxis while immobile", (ENOXAPARIN,), "medication", 24),
    ),
)

PARAMS: dict[str, float] = {
    "onset_min_h": 12,  # nadir window of the Brighton criteria: 12 h ...
    "onset_max_d": 28,  # ... to 4 weeks
    "dx_within_d": 28,
    "cord_signs_within_d": 28,
    "fvc_per_kg_min": 20,  # mL/kg ("20" of 20/30/40)
    "fvc_drop_fraction": 0.30,
    "mip_min_abs": 30,  # cmH2O ("30"): MIP weaker than -30
    "mep_min": 40,  # cmH2O ("40")
    "resp_within_h": 72,  # bulbar/breathing findings and bilateral facial weakness
    "pressure_within_h": 24,  # MIP, MEP
    "mrc_sum_within_h": 72,  # MRC sum score used by EGRIS
    "egris_high": 5,
    "supportive_within_d": 28,  # progression, paraesthesia, CSF (2.1 supportive)
    "infection_before_onset_weeks": 6,  # infection within 6 weeks before weakness onset
    "csf_protein_high_mg_dl": 45,  # mg/dL (0.45 g/L): raised above
    "csf_wbc_max_per_ul": 50,  # /uL: Brighton requires fewer; at or above argues against GBS
    "disability_treat_min": 3,  # GBS disability score at or above which immunotherapy is indicated
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "onset_min_h": ParamRange("h", 0, 48, "2.1 Brighton nadir window starts at 12 h"),
    "onset_max_d": ParamRange("d", 14, 56, "2.1 Brighton: nadir within 4 weeks; 8 weeks is CIDP territory"),
    "dx_within_d": ParamRange(
        "d", 1, 56, "2.1: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "cord_signs_within_d": ParamRange(
        "d", 1, 56, "2.3: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "fvc_per_kg_min": ParamRange(
        "mL/kg", 10, 30, "2.2 '20/30/40' rule: 20 mL/kg; 10-30 spans the published intubation cut-offs"
    ),
    "fvc_drop_fraction": ParamRange("fraction", 0.1, 0.5, "2.2 fall >= 30 %; 0 would call any repeat a fall"),
    "mip_min_abs": ParamRange("cmH2O", 20, 60, "2.2 '20/30/40': MIP weaker than -30 cmH2O"),
    "mep_min": ParamRange("cmH2O", 20, 80, "2.2 '20/30/40': MEP below 40 cmH2O"),
    "resp_within_h": ParamRange(
        "h", 1, 168, "2.2: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "pressure_within_h": ParamRange("h", 1, 72, "2.2 MIP/MEP: older does not describe today's breathing"),
    "mrc_sum_within_h": ParamRange("h", 1, 168, "2.2 EGRIS uses the MRC sum at admission"),
    "egris_high": ParamRange("EGRIS points", 3, 7, "2.2 EGRIS 0-7; >= 5 high risk"),
    "supportive_within_d": ParamRange(
        "d", 1, 56, "2.1: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "infection_before_onset_weeks": ParamRange("weeks", 1, 12, "2.1 antecedent infection within 6 weeks"),
    "csf_protein_high_mg_dl": ParamRange(
        "mg/dL", 30, 100, "2.1 raised CSF protein > 45 mg/dL (laboratory limits 40-60)"
    ),
    "csf_wbc_max_per_ul": ParamRange("/uL", 5, 100, "2.1 Brighton: fewer than 50 cells/uL"),
    "disability_treat_min": ParamRange(
        "GBS disability score", 1, 4, "2.4 GBS disability scale 0-6; treat from 3"
    ),
}

REFLEXES = ("reflexes_absent", "reflexes_reduced")
CORD_SIGNS = ("sensory_level", "hyperreflexia", "spasticity")
BULBAR_OR_BREATHING = ("dysphagia", "dyspnea", "orthopnea", "respiratory_failure")
#: EGRIS points (Walgaard 2010): days from weakness onset; MRC sum score bands.
EGRIS_ONSET = ((-1, 3, 2), (3, 7, 1), (7, 10_000, 0))  # (days above, days up to, points)
EGRIS_MRC = ((51, 60, 0), (41, 50, 1), (31, 40, 2), (21, 30, 3), (0, 20, 4))


def define(r: Rules, p: dict[str, float]) -> None:
    tempo_lo, tempo_hi = p["onset_min_h"] * HOUR, p["onset_max_d"] * DAY
    resp = p["resp_within_h"] * HOUR
    pressure = p["pressure_within_h"] * HOUR

    # Weakness pattern: both legs, paraplegia/paraparesis, or both legs and both arms.
    # valued in seconds since the weakness began (on those sides: an old weakness of one leg does
    # not make a new weakness of both legs old, the "history silences a new event" audit)
    r.derive("gbs_weakness", fact("bilateral_leg_weakness"), value=lambda f: f[0]["v"])
    r.derive(
        "gbs_weakness",
        present("paraplegia_paraparesis"),
        value=lambda f: f[0].get("side_onset_age", -1),
    )
    r.derive(
        "gbs_weakness",
        fact("bilateral_leg_weakness"),
        fact("bilateral_arm_weakness"),
        value=lambda f: max(f[0]["v"], f[1]["v"]),
    )

    for reflex in REFLEXES:
        r.derive(
            "gbs_core",
            fact("gbs_weakness").where(
                (m.v >= tempo_lo) & (m.v <= tempo_hi),
                f"begun {p['onset_min_h']:g} h to {p['onset_max_d']:g} days ago",
            ),
            present(reflex, tempo_hi),
        )
    r.derive(
        "gbs_core",
        present("gbs_dx").where(m.onset_age <= p["dx_within_d"] * DAY, "diagnosed within 28 days"),
    )

    # Respiratory red flags (any one).
    r.derive("gbs_respiratory", fact("fvc_per_kg") < p["fvc_per_kg_min"])
    # FVC fell >= 30 % from the first FVC of this episode: the episode began with the weakness
    # (earliest onset) or with the GBS diagnosis; its first FVC is the first one since then.
    drop = p["fvc_drop_fraction"]
    episodes = (
        (
            fact("gbs_weakness").where(m.v <= tempo_hi, "begun within 28 days"),
            "v",
        ),
        (
            present("gbs_dx").where(m.onset_age <= p["dx_within_d"] * DAY, "diagnosed within 28 days"),
            "onset_age",
        ),
    )
    for episode, start in episodes:
        r.derive(
            "gbs_respiratory",
            episode.named("episode"),
            result("fvc")
            .first_since(getattr(ref("episode"), start), "the first FVC since the episode began")
            .where(m.v > 0, "(> 0: a fall is measured from a volume)")
            .named("first"),
            latest("fvc", pressure).where(
                (m.ts > ref("first").ts) & (m.v <= ref("first").v * (1 - drop)),
                f"fallen by {drop:.0%} or more from it",
            ),
            value=lambda f: 100 * (1 - f[2]["v"] / f[1]["v"]),
            text="FVC fell by {v:.0f} % from the episode's first FVC",
        )
    r.derive("gbs_respiratory", fact("resp_mip_abs") < p["mip_min_abs"])  # MIP weaker than -30
    r.derive("gbs_respiratory", latest("mep", pressure) < p["mep_min"])
    for key in BULBAR_OR_BREATHING:
        r.derive("gbs_respiratory", present(key, resp))
    r.derive("gbs_respiratory", fact("bilateral_facial_weakness", resp))

    # EGRIS, computed only when all three inputs exist (facial/bulbar weakness present or absent).
    for lo, hi, points in EGRIS_ONSET:
        r.derive(
            "gbs_egris_onset",
            fact("gbs_weakness").where(
                (m.v > lo * DAY) & (m.v <= hi * DAY),
                f"onset {lo}-{hi} days ago",
            ),
            value=lambda _f, points=points: points,
            text=f"EGRIS onset points {points}",
        )
    for lo, hi, points in EGRIS_MRC:
        r.derive(
            "gbs_egris_mrc",
            latest("mrc_sum", p["mrc_sum_within_h"] * HOUR).where(
                (m.v >= lo) & (m.v <= hi), f"MRC sum {lo}-{hi}"
            ),
            value=lambda _f, points=points: points,
            text=f"EGRIS MRC-sum points {points}",
        )
    for key in ("facial_weakness", "dysphagia"):
        r.derive("gbs_egris_bulbar", present(key, resp), value=lambda _f: 1, text="facial/bulbar weakness")
        r.derive("gbs_egris_bulbar", absent(key, resp), value=lambda _f: 0, text="no facial/bulbar weakness")
    r.derive(
        "gbs_respiratory",
        fact("gbs_egris_onset"),
        fact("gbs_egris_mrc"),
        fact("gbs_egris_bulbar").where(
            ref("gbs_egris_onset").v + ref("gbs_egris_mrc").v + m.v >= p["egris_high"], "EGRIS total ≥ 5"
        ),
        value=lambda f: f[0]["v"] + f[1]["v"] + f[2]["v"],
        text="EGRIS {v:g}",
    )

    r.fire("A", fact("gbs_core"), fact("gbs_respiratory"))
    r.fire("B", fact("gbs_core"))

    # Card notes: supportive features, a CSF that argues against, treatment threshold.
    both = ("A", "B")
    supportive = p["supportive_within_d"] * DAY
    r.note(both, fact("weakness_progression", supportive), text="Supportive: weakness progressing ({facts})")
    before = p["infection_before_onset_weeks"] * WEEK
    r.note(
        both,
        fact("gbs_weakness").where(m.v >= 0, "dated"),
        ever("recent_infection").where(
            (m.onset_age >= ref("gbs_weakness").v) & (m.onset_age <= ref("gbs_weakness").v + before),
            f"begun in the {p['infection_before_onset_weeks']:g} weeks before the weakness",
        ),
        text="Supportive: preceding infection ({facts})",
    )
    r.note(both, present("paresthesia", supportive), text="Supportive: paraesthesia ({facts})")
    r.note(
        both,
        latest("csf_protein", supportive) > p["csf_protein_high_mg_dl"],
        latest("csf_wbc", supportive) < p["csf_wbc_max_per_ul"],
        text="Supportive: CSF albuminocytologic dissociation ({facts})",
    )
    r.note(
        both,
        latest("csf_wbc", supportive) >= p["csf_wbc_max_per_ul"],
        text="CSF white cells at or above 50 /uL argue against GBS: consider infection "
        "(e.g. Lyme neuroborreliosis) or lymphoma ({facts})",
    )
    r.note(
        both,
        latest("gbs_disability", supportive) >= p["disability_treat_min"],
        text="GBS disability score 3 or more ({facts}): immunotherapy indicated (IVIG within 2 weeks "
        "or plasma exchange within 4 weeks of onset)",
    )

    for sign in CORD_SIGNS:
        r.block(
            ("A", "B"),
            fact("gbs_weakness"),
            present(sign, p["cord_signs_within_d"] * DAY),
            reason="upper-motor-neurone signs point to the spinal cord (spinal_cord_compression)",
        )
