"""Vitamin B12 deficiency with neuropathy (docs/rules/b12_deficiency_neuropathy.md).

NICE NG239 *Vitamin B12 deficiency in over 16s* (2024): total B12 < 180 ng/L (133 pmol/L) is
deficiency, 180-350 ng/L (133-258 pmol/L) is indeterminate and needs methylmalonic acid; BSH
(Devalia 2014). The age gate (> 60) comes from the seed article and is a parameter.

    b12   = latest(b12_total, 12 months) in pg/mL (= ng/L; pmol/L x 1.355, docs/clinical-policy.md#units)
            results taken after B12 replacement began are ignored: the newest result taken
            before the first replacement record is the latest (engine.prepare censoring)
    neuro = present(polyneuropathy | paraesthesia | leg numbness | ataxia | gait difficulty,
            12 months) OR any leg weakness within 12 months
    deficient     = b12 < 180 pg/mL
    indeterminate = 180 <= b12 <= 350 pg/mL
    mma_high      = latest(MMA, 12 months) > 0.45 umol/L (450 nmol/L), or above the lab's limit
    TIER B (routine) = age > 60 AND neuro
                       AND (deficient OR indeterminate AND mma_high OR present(B12 deficiency dx))
    TIER A (urgent)  = tier B AND (weakness progression within 8 weeks
                                   OR present(gait difficulty | falls, 8 weeks))

Card notes (never change the tier):
    alternative cause of neuropathy on record: present(diabetic neuropathy | diabetes |
        alcoholic polyneuropathy)
    supporting: latest(homocysteine, 12 months) above the lab's upper limit, or, when the lab sent
        none, > 15 umol/L

Never compare a pmol/L value with the pg/mL cut-offs: 150 pmol/L = 203 pg/mL is indeterminate,
not deficient (8.2). An indeterminate value without a raised MMA raises no alert; nor does a low
B12 without a neurological finding.
"""

from __future__ import annotations

from engine.dsl import DAY, WEEK, Rules, fact, latest, m, medication, patient, present
from rulesets.codes import NEUROLOGY_REFERRAL
from rulesets.meta import LOINC, RXNORM, SNOMED, Action, Code, ParamOrder, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="b12_deficiency_neuropathy",
    version="1.1.0",
    title="Vitamin B12 deficiency with neuropathy",
    tiers=(
        Tier("A", "urgent", "worsening gait or weakness: treat and refer now"),
        Tier("B", "routine", "B12 deficiency with neurological findings: treat"),
    ),
    source_label="NICE NG239 Vitamin B12 deficiency in over 16s: diagnosis and management (2024)",
    source_url="https://www.nice.org.uk/guidance/ng239",
    disorder=Code(SNOMED, "190634004", "Cobalamin deficiency"),
    actions=(
        Action(
            "B12 replacement; with neurological involvement intramuscular hydroxocobalamin "
            "per BNF/NICE (start within days)",
            (Code(RXNORM, "11248", "Vitamin B 12"),),
            "medication",
            72,
        ),
        Action(
            "Confirm: methylmalonic acid if B12 is indeterminate; full blood count with MCV; "
            "autoimmune gastritis (intrinsic factor) antibodies, with the next bloods",
            (Code(LOINC, "13964-2", "Methylmalonate"), Code(LOINC, "787-2", "MCV")),
            "order",
            72,
        ),
        Action(
            "Review metformin and acid-suppressing drugs (same visit)",
            (Code(RXNORM, "6809", "Metformin"),),
            "task",
            24,
        ),
        Action(
            "Urgent neurology referral: the neurological picture is worsening",
            (NEUROLOGY_REFERRAL,),
            "order",
            24,
            tiers=("A",),
        ),
        Action(
            "Neurology referral if there is weakness or ataxia",
            (NEUROLOGY_REFERRAL,),
            "order",
            14 * 24,
            tiers=("B",),
        ),
        Action("Re-assess symptoms after 3 months of treatment", (), "task", 90 * 24),
    ),
)

PARAMS: dict[str, float] = {
    "b12_within_days": 365,  # latest B12 within 12 months
    "mma_within_days": 365,  # latest MMA within 12 months
    "neuro_within_days": 365,  # neurological finding within 12 months
    "b12_deficient_pg_ml": 180,  # pg/mL (= ng/L; 133 pmol/L): deficient below (NICE NG239)
    "b12_indeterminate_max_pg_ml": 350,  # pg/mL (258 pmol/L): indeterminate up to and including
    "mma_high_umol_l": 0.45,  # umol/L (450 nmol/L): MMA raised above
    "b12_min_age": 60,  # years, exclusive (seed article "over age 60")
    "worsening_within_weeks": 8,  # progression / gait difficulty / falls that escalate to urgent
    "homocysteine_within_days": 365,  # card note: latest homocysteine within 12 months
    "homocysteine_high_umol_l": 15,  # umol/L: raised above, when the lab sends no upper limit
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "b12_within_days": ParamRange("d", 30, 730, "8.1 B12 within 12 months"),
    "mma_within_days": ParamRange("d", 30, 730, "8.1 MMA within 12 months"),
    "neuro_within_days": ParamRange("d", 30, 730, "8.1 neurological finding within 12 months"),
    "b12_deficient_pg_ml": ParamRange("pg/mL", 100, 250, "8.1 deficient < 180 pg/mL (NICE NG239)"),
    "b12_indeterminate_max_pg_ml": ParamRange("pg/mL", 250, 500, "8.1 indeterminate up to 350 pg/mL"),
    "mma_high_umol_l": ParamRange("umol/L", 0.25, 0.75, "8.1 MMA raised > 0.45 umol/L"),
    "b12_min_age": ParamRange("years", 18, 80, "8.1 age > 60 (seed article; configurable)"),
    "worsening_within_weeks": ParamRange("weeks", 1, 26, "8.2 worsening within 8 weeks"),
    "homocysteine_within_days": ParamRange("d", 30, 730, "8.1 homocysteine within 12 months"),
    "homocysteine_high_umol_l": ParamRange("umol/L", 10, 30, "8.1 homocysteine raised > 15 umol/L"),
}

#: Pairs that must stay ordered (lower < upper) whatever the site sets (redflags.config).
PARAM_ORDER: tuple[ParamOrder, ...] = (
    ParamOrder(
        "b12_deficient_pg_ml",
        "b12_indeterminate_max_pg_ml",
        "the indeterminate B12 band lies above the deficient cut-off",
    ),
)

ALTERNATIVE_CAUSES = ("diabetic_neuropathy", "diabetes", "alcoholic_polyneuropathy")
NEURO = ("polyneuropathy", "paresthesia", "leg_numbness", "ataxia_balance", "gait_difficulty")
WORSENING = ("gait_difficulty", "fall_long_lie")


def define(r: Rules, p: dict[str, float]) -> None:
    b12_window = p["b12_within_days"] * DAY
    neuro_window = p["neuro_within_days"] * DAY
    worsening = p["worsening_within_weeks"] * WEEK
    low, high, mma = p["b12_deficient_pg_ml"], p["b12_indeterminate_max_pg_ml"], p["mma_high_umol_l"]

    # A B12 measured after replacement began does not show the untreated level (8.1, 8.2).
    r.ignore_results_after(
        "b12_total",
        "b12_replacement",
        text="a replacement order, administration or statement dated before the sample",
    )

    for key in NEURO:
        r.derive("b12_neuro", present(key, neuro_window))
    r.derive("b12_neuro", fact("any_leg_weakness", neuro_window))

    b12 = latest("b12_total", b12_window)
    r.derive(
        "b12_low",
        b12 < low,
        text=f"B12 deficient ({{v:.0f}} pg/mL < {low:g} pg/mL)",
    )
    r.derive(
        "b12_indeterminate",
        (b12 >= low) <= high,
        text=f"B12 indeterminate ({{v:.0f}} pg/mL, {low:g}-{high:g} pg/mL)",
    )
    r.derive(
        "b12_mma_high",
        latest("mma", p["mma_within_days"] * DAY) > mma,
        text=f"MMA raised ({{v:g}} umol/L > {mma:g} umol/L)",
    )
    r.derive(
        "b12_mma_high",
        latest("mma", p["mma_within_days"] * DAY).where(
            (m.has_high == 1) & (m.v > m.high), "above the laboratory's upper limit"
        ),
        text="MMA above the laboratory's upper limit ({v:g} umol/L)",
    )
    r.derive(
        "b12_low", fact("b12_indeterminate"), fact("b12_mma_high"), text="indeterminate B12 with raised MMA"
    )
    r.derive("b12_low", present("b12_deficiency_dx"))

    r.derive("b12_worsening", fact("weakness_progression", worsening))
    for key in WORSENING:
        r.derive("b12_worsening", present(key, worsening))

    older = patient().where(m.years > p["b12_min_age"], f"older than {p['b12_min_age']:g} years")
    r.fire("B", older, fact("b12_neuro"), fact("b12_low"))
    r.fire("A", older, fact("b12_neuro"), fact("b12_low"), fact("b12_worsening"))

    r.note(
        ("A", "B"),
        fact("b12_indeterminate"),
        text="{facts}: methylmalonic acid decides whether this is deficiency",
    )
    r.note(
        ("A", "B"),
        medication("b12_replacement"),
        text="B12 replacement already recorded ({facts}); B12 results taken after it began are ignored",
    )
    for key in ALTERNATIVE_CAUSES:
        r.note(("A", "B"), present(key), text="alternative cause of neuropathy on record: {facts}")
    homocysteine = latest("homocysteine", p["homocysteine_within_days"] * DAY)
    r.note(
        ("A", "B"),
        homocysteine.where((m.has_high == 1) & (m.v > m.high), "above the laboratory's upper limit"),
        text="supporting: homocysteine above the laboratory's upper limit ({facts})",
    )
    hcy = p["homocysteine_high_umol_l"]
    r.note(
        ("A", "B"),
        homocysteine.where(m.has_high == 0, "without a laboratory upper limit") > hcy,
        text=f"supporting: homocysteine above {hcy:g} umol/L ({{facts}})",
    )
