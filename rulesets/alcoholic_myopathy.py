"""Alcohol-related muscle weakness, chronic alcoholic myopathy (docs/rules/alcoholic_myopathy.md).

No formal diagnostic criteria exist: Simon L, Jolley SE, Molina PE, Alcohol Res 2017;38(2):
207-217, and the seed article. Alcohol thresholds: WHO AUDIT guidelines (Babor 2001: AUDIT >= 20
= possible dependence); AUDIT-C (Bush 1998).

    heavy_alcohol = present(alcohol use disorder)               # current, not refuted
                  | latest(AUDIT-C, 12 months) >= 8 | latest(AUDIT, 12 months) >= 20
    prox = present(proximal weakness | pelvic girdle weakness)
         | MRC <= 4 in hip flexors / hip extensors / knee extensors on both sides
         | present(muscle atrophy) of the thigh
    duration = earliest onset of prox at least 4 weeks ago     # gradual, not sudden
    FIRES (routine) = heavy_alcohol AND prox AND duration
                      unless rhabdomyolysis fires (either tier): acute muscle breakdown is §12

For MRC grades the weakness dates from the oldest weak proximal grade on record: the latest
grades of both sides are joined with any weak proximal grade recorded at least 4 weeks ago.

Supporting, shown on the card only: GGT above the laboratory upper limit, MCV > 100 fL, low
potassium / magnesium / phosphate (the §7 cut-offs).
Also on the card: alcohol-related polyneuropathy recorded too (present(alcoholic polyneuropathy)).

Must not fire (10.2): alcohol use disorder with distal sensory symptoms only (alcoholic
polyneuropathy: no proximal weakness); weakness begun less than 4 weeks ago; an alcohol
Condition in remission or resolved without an AUDIT in 12 months (not current); AUDIT-C below 8.

Choices where the reference is open:
  - "MRC <= 4 on both sides" accepts any of the three proximal groups on each side (e.g. left hip
    flexors and right knee extensors), or one record with bilateral laterality;
  - "low K/Mg/phosphate" on the card uses the section 7 cut-offs (K < 3.5, Mg < 0.5,
    P < 0.32 mmol/L); GGT / MCV are shown when measured within 30 days;
  - "routine" actions are due within a week (168 h), the blood tests with the next bloods (24 h).
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, Cond, Rules, fact, latest, m, present, result
from rulesets.codes import CREATINE_KINASE, MAGNESIUM, POTASSIUM
from rulesets.meta import ICD10CM, LOINC, RXNORM, SNOMED, Action, Code, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="alcoholic_myopathy",
    version="1.1.0",
    title="Alcohol-related muscle weakness (myopathy)",
    tiers=(Tier("A", "routine", "heavy alcohol use with slowly progressive proximal weakness"),),
    source_label="Simon L et al., Alcoholic myopathy, Alcohol Res 2017; WHO AUDIT guidelines (2001)",
    source_url="https://pubmed.ncbi.nlm.nih.gov/28988574/",
    disorder=Code(ICD10CM, "G72.1", "Alcoholic myopathy"),
    actions=(
        Action(
            "Alcohol assessment and referral to a treatment service",
            (Code(SNOMED, "1254709001", "Referral to substance use disorder treatment program"),),
            "order",
            168,
        ),
        Action("Thiamine supplementation", (Code(RXNORM, "10454", "thiamine"),), "medication", 168),
        Action(
            "Check potassium, magnesium, phosphate, CK and liver tests with the next bloods",
            (
                POTASSIUM,
                MAGNESIUM,
                Code(LOINC, "14879-1", "Phosphate [Moles/volume] in Serum or Plasma"),
                CREATINE_KINASE,
                Code(
                    LOINC,
                    "2324-2",
                    "Gamma glutamyl transferase [Enzymatic activity/volume] in Serum or Plasma",
                ),
            ),
            "order",
            24,
        ),
        Action(
            "Physiotherapy for proximal strength",
            (Code(SNOMED, "308447003", "Referral to physiotherapist"),),
            "order",
            168,
        ),
    ),
    suppressed_by=(("rhabdomyolysis", "A", "A"), ("rhabdomyolysis", "B", "A")),
)

PARAMS: dict[str, float] = {
    "audit_within_d": 365,  # AUDIT / AUDIT-C within 12 months
    "audit_c_min": 8,  # AUDIT-C >= 8: high-risk range (Bush 1998)
    "audit_total_min": 20,  # AUDIT >= 20: possible dependence (WHO, Babor 2001)
    "mrc_weak_max": 4,  # MRC grade at or below which a proximal group counts as weak
    "duration_min_d": 28,  # proximal weakness begun at least 4 weeks ago
    "supporting_within_d": 30,  # GGT / MCV shown on the card if this recent
    "mcv_high_fl": 100,  # fL
    "lab_within_h": 72,  # potassium / magnesium / phosphate shown on the card if this recent
    "k_low": 3.5,  # mmol/L (§7 tier C cut-off)
    "mg_low": 0.5,  # mmol/L (§7 tier B cut-off)
    "phosphate_low": 0.32,  # mmol/L (§7 tier B cut-off)
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "audit_within_d": ParamRange("d", 30, 730, "10.1 AUDIT within 12 months"),
    "audit_c_min": ParamRange("AUDIT-C points", 4, 10, "10.1 AUDIT-C 0-12; >= 8 high risk (Bush 1998)"),
    "audit_total_min": ParamRange("AUDIT points", 8, 30, "10.1 AUDIT 0-40; >= 20 possible dependence (WHO)"),
    "mrc_weak_max": ParamRange("MRC grade", 3, 4, "10.1 MRC 4 = weak against resistance"),
    "duration_min_d": ParamRange("d", 7, 90, "10.1 chronic proximal weakness >= 4 weeks"),
    "supporting_within_d": ParamRange(
        "d", 1, 365, "10.2 card note: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "mcv_high_fl": ParamRange("fL", 95, 110, "10.2 MCV > 100 fL"),
    "lab_within_h": ParamRange("h", 6, 168, "10.2 card note: latest electrolytes"),
    "k_low": ParamRange("mmol/L", 3.0, 3.6, "7.1 K < 3.5 mild"),
    "mg_low": ParamRange("mmol/L", 0.3, 0.7, "7.1 Mg < 0.5 mmol/L"),
    "phosphate_low": ParamRange("mmol/L", 0.2, 0.6, "7.1 phosphate < 0.32 mmol/L"),
}

PROXIMAL_FINDINGS = ("proximal_weakness", "pelvic_girdle_weakness")
PROXIMAL_GROUPS = ("hip_flexors", "hip_extensors", "knee_extensors")
THIGH = "68367000"


def _proximal_group(cond: Cond) -> Cond:
    return cond.where(m.site.one_of(*PROXIMAL_GROUPS), "in hip flexors, hip extensors or knee extensors")


def define(r: Rules, p: dict[str, float]) -> None:
    audit = p["audit_within_d"] * DAY
    r.derive("heavy_alcohol", present("alcohol_use_disorder"))
    r.derive("heavy_alcohol", latest("audit_c", audit) >= p["audit_c_min"])
    r.derive("heavy_alcohol", latest("audit_total", audit) >= p["audit_total_min"])

    for key in PROXIMAL_FINDINGS:
        r.derive("alcohol_proximal_weakness", present(key))
    thigh = present("muscle_atrophy").where(m.site == THIGH, "of the thigh")
    r.derive("alcohol_proximal_weakness", thigh)
    weak = _proximal_group(latest("mrc_grade") <= p["mrc_weak_max"])
    left, right, bilateral = weak.on("left"), weak.on("right"), weak.on("bilateral")
    duration = p["duration_min_d"] * DAY
    # An earlier weak proximal grade old enough to date the weakness (duration = earliest onset).
    earlier = _proximal_group(result("mrc_grade") <= p["mrc_weak_max"]).where(
        m.age >= duration, f"recorded at least {p['duration_min_d']:g} days ago"
    )
    text = "MRC grade {v:g} or less in proximal leg muscles on both sides"

    def grade(facts: list[dict]) -> float:
        return max(f["v"] for f in facts)

    def both(_facts: list[dict]) -> str:
        return "bilateral"

    r.derive("alcohol_proximal_weakness", bilateral, value=grade, text=text)
    r.derive("alcohol_proximal_weakness", left, right, side=both, value=grade, text=text)
    r.derive("alcohol_proximal_weakness", bilateral, earlier, value=grade, text=text)
    r.derive("alcohol_proximal_weakness", left, right, earlier, side=both, value=grade, text=text)

    r.fire(
        "A",
        fact("heavy_alcohol"),
        fact("alcohol_proximal_weakness").where(
            m.first_onset_age >= duration, f"begun at least {p['duration_min_d']:g} days ago"
        ),
    )

    support = p["supporting_within_d"] * DAY
    lab = p["lab_within_h"] * HOUR
    supporting = (
        latest("ggt", support).where((m.has_high == 1) & (m.v > m.high), "above the laboratory upper limit"),
        latest("mcv", support) > p["mcv_high_fl"],
        latest("potassium", lab) < p["k_low"],
        latest("magnesium", lab) < p["mg_low"],
        latest("phosphate", lab) < p["phosphate_low"],
    )
    for cond in supporting:
        r.note("A", cond, text="supporting: {facts}")
    r.note(
        "A",
        present("alcoholic_polyneuropathy"),
        text="alcohol-related polyneuropathy also recorded ({facts})",
    )
