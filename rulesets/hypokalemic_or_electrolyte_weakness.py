"""Electrolyte disturbance causing weakness (docs/rules/hypokalemic_or_electrolyte_weakness.md).

UK Kidney Association hyperkalaemia guideline (2020: severe >= 6.5, moderate 6.0-6.4 mmol/L);
Society for Endocrinology emergency guidance on acute hypocalcaemia (Turner 2016: corrected Ca
< 1.9 mmol/L) and hypercalcaemia (Walsh 2016: > 3.5 mmol/L); hypokalaemia grading of Kardalas
2018 (mild 3.0-3.4, moderate 2.5-2.9, severe < 2.5 mmol/L).

All laboratory values are ``latest(..., 72 h)`` in mmol/L after unit normalisation (15.1)::

    K   = latest(potassium)               iCa = latest(calcium_ionized)
    Ca  = corrected calcium (15.2)        Mg  = latest(magnesium);  P = latest(phosphate)
    weak = any_leg_weakness | proximal weakness | generalised weakness, within 7 d

    TIER A (critical), with or without weakness:
        K < 2.5 | K >= 6.5 | Ca >= 3.5 | Ca < 1.9 | iCa < 0.8
        | weak AND known hypokalaemic periodic paralysis
    TIER B (urgent), weak AND:
        2.5 <= K < 3.0 | 6.0 <= K < 6.5 | 3.0 <= Ca < 3.5 | Mg < 0.5 | P < 0.32
    TIER C (routine), weak AND:
        3.0 <= K < 3.5 | 2.6 < Ca < 3.0 | 1.9 <= Ca < 2.1

Each branch names the disorder it suggests (hypo-/hyperkalaemia, hypo-/hypercalcaemia,
hypomagnesaemia, hypophosphataemia), which becomes the CarePlan's reasonCode.

Corrected calcium is derived once, as ``calcium_corrected``:
  - with an albumin result within 72 h of the calcium sample:
    Ca + 0.02 x (40 - albumin g/L) (15.2);
  - without one, the total calcium itself (7.1: "if albumin missing use total Ca"). "No albumin"
    is ``unless(calcium with a paired albumin)``, decided once every positive fact is derived,
    so the two derivations are exclusive whatever order the facts arrive in.
Ionised calcium, when present, is preferred over the corrected value for the hypocalcaemia
branches (15.2): the corrected-calcium hypocalcaemia branches hold ``unless`` an ionised
calcium is there.

Must not fire (7.2): a newer normal value supersedes an older abnormal one (``latest``);
preliminary results support tier A only (the engine's rule, with a card note); registered,
cancelled, entered-in-error, unknown or dataAbsentReason results are missing (intake);
potassium on a haemolysed sample never raises the hyperkalaemia branches (a card note says
"repeat sample" when the alert fires for another reason); physiologically impossible values
(K < 1 or > 10, Ca < 0.5 or > 6 mmol/L) are missing with a data-quality warning
(``fhir_adapters.plausibility``); tier C values without weakness raise nothing.

Choices where the reference is open:
  - thresholds are compared in mmol/L after conversion, so the rounded mg/dL equivalents of 7.1
    differ at the edge (14.0 mg/dL = 3.49 mmol/L is tier B; 12.0 mg/dL = 2.99 mmol/L is tier C);
  - with an ionised calcium on file only its tier A cut-off (< 0.8 mmol/L) decides hypocalcaemia:
    the reference gives no ionised cut-off for tiers B/C;
  - the periodic-paralysis branch suggests hypokalaemia (no own disorder code in 7);
  - "repeat the value" (action 1) is due now at tier A and with the next bloods at tiers B/C.
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, Cond, Rules, Unless, fact, has_number, latest, m, present, ref, unless
from rulesets.codes import ECG, IV_THERAPY, MAGNESIUM
from rulesets.meta import LOINC, RXNORM, SNOMED, SWITCH, Action, Code, ParamOrder, ParamRange, RuleMeta, Tier

HYPOKALEMIA = Code(SNOMED, "43339004", "Hypokalemia")
HYPERKALEMIA = Code(SNOMED, "14140009", "Hyperkalemia")
HYPOCALCEMIA = Code(SNOMED, "5291005", "Hypocalcemia")
HYPERCALCEMIA = Code(SNOMED, "66931009", "Hypercalcemia")
HYPOMAGNESEMIA = Code(SNOMED, "190855004", "Hypomagnesemia")
HYPOPHOSPHATEMIA = Code(SNOMED, "4996001", "Hypophosphatemia")

META = RuleMeta(
    id="hypokalemic_or_electrolyte_weakness",
    version="1.0.1",
    title="Electrolyte disturbance causing weakness",
    tiers=(
        Tier("A", "critical", "life-threatening electrolyte value"),
        Tier("B", "urgent", "moderate electrolyte disturbance with weakness"),
        Tier("C", "routine", "mild electrolyte disturbance with weakness"),
    ),
    source_label=(
        "UK Kidney Association hyperkalaemia guideline (2020); Society for Endocrinology "
        "emergency guidance on hypo-/hypercalcaemia (2016); Kardalas et al., Hypokalemia (2018)"
    ),
    source_url="https://pmc.ncbi.nlm.nih.gov/articles/PMC5881435",
    disorder=HYPOKALEMIA,
    actions=(
        Action(
            "Repeat and confirm the abnormal value on a non-haemolysed sample (same LOINC test as "
            "the trigger)",
            (),
            "order",
            0.5,
            tiers=("A",),
        ),
        Action(
            "Repeat and confirm the abnormal value on a non-haemolysed sample (same LOINC test as "
            "the trigger) with the next bloods",
            (),
            "order",
            24,
            tiers=("B", "C"),
        ),
        Action(
            "12-lead ECG and cardiac monitoring (potassium or calcium trigger)",
            (ECG,),
            "order",
            1,
            tiers=("A",),
        ),
        Action(
            "Potassium replacement if potassium is low (oral or IV per protocol)",
            (Code(RXNORM, "8591", "Potassium Chloride"),),
            "medication",
            24,
        ),
        Action(
            "Check magnesium with the next bloods (low magnesium keeps potassium low)",
            (
                MAGNESIUM,
                Code(LOINC, "19123-9", "Magnesium [Mass/volume] in Serum or Plasma"),
            ),
            "order",
            24,
        ),
        Action(
            "Hypercalcaemia: IV fluids; hyperkalaemia: emergency treatment protocol",
            (IV_THERAPY,),
            "medication",
            1,
            tiers=("A",),
        ),
        Action("Review causative medicines (e.g. diuretics)", (), "task", 12),
    ),
)

PARAMS: dict[str, float] = {
    "lab_within_h": 72,  # latest(..., 72 h) for every laboratory value (7.1)
    "weak_within_d": 7,  # weakness finding window (7.1)
    # potassium, mmol/L
    "k_critical_low": 2.5,  # A: K < 2.5 (severe hypokalaemia, Kardalas 2018)
    "k_critical_high": 6.5,  # A: K >= 6.5 (severe hyperkalaemia, UKKA 2020)
    "k_urgent_low": 3.0,  # B: 2.5 <= K < 3.0 (moderate)
    "k_urgent_high": 6.0,  # B: 6.0 <= K < 6.5 (moderate, UKKA 2020)
    "k_routine_low": 3.5,  # C: 3.0 <= K < 3.5 (mild)
    # corrected calcium, mmol/L
    "ca_critical_high": 3.5,  # A: Ca >= 3.5 (Walsh 2016)
    "ca_critical_low": 1.9,  # A: Ca < 1.9 (Turner 2016)
    "ca_urgent_high": 3.0,  # B: 3.0 <= Ca < 3.5
    "ca_routine_high": 2.6,  # C: 2.6 < Ca < 3.0
    "ca_routine_low": 2.1,  # C: 1.9 <= Ca < 2.1
    "ica_critical_low": 0.8,  # A: ionised Ca < 0.8 mmol/L (typical laboratory critical limit)
    "mg_urgent_low": 0.5,  # B: Mg < 0.5 mmol/L (< 1.2 mg/dL)
    "phosphate_urgent_low": 0.32,  # B: P < 0.32 mmol/L (< 1.0 mg/dL)
    # calcium correction for albumin (15.2)
    "albumin_pair_h": 72,  # albumin counts if within 72 h of the calcium sample
    "albumin_reference_g_l": 40,  # corrected Ca = Ca + factor x (40 - albumin g/L)
    "albumin_ca_factor": 0.02,  # mmol/L of calcium per g/L of albumin
    "hemolysed_note": 1,  # 1: card note "repeat sample" for a haemolysed high potassium (7.2)
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "lab_within_h": ParamRange("h", 6, 168, "7.1 latest result within 72 h"),
    "weak_within_d": ParamRange("d", 1, 30, "7.1 weakness within 7 days"),
    "k_critical_low": ParamRange("mmol/L", 2.0, 3.0, "7.1 K < 2.5 severe"),
    "k_critical_high": ParamRange("mmol/L", 6.0, 7.0, "7.1 K >= 6.5 severe (UKKA 2020)"),
    "k_urgent_low": ParamRange("mmol/L", 2.5, 3.5, "7.1 K < 3.0 moderate"),
    "k_urgent_high": ParamRange("mmol/L", 5.5, 6.5, "7.1 K >= 6.0 moderate (UKKA 2020)"),
    "k_routine_low": ParamRange("mmol/L", 3.0, 3.6, "7.1 K < 3.5 mild; laboratory lower limits 3.5-3.6"),
    "ca_critical_high": ParamRange("mmol/L", 3.0, 4.0, "7.1 corrected Ca >= 3.5 severe"),
    "ca_critical_low": ParamRange("mmol/L", 1.5, 2.1, "7.1 corrected Ca < 1.9 severe"),
    "ca_urgent_high": ParamRange("mmol/L", 2.6, 3.5, "7.1 corrected Ca >= 3.0 moderate"),
    "ca_routine_high": ParamRange("mmol/L", 2.5, 3.0, "7.1 corrected Ca > 2.6 (upper reference limit)"),
    "ca_routine_low": ParamRange("mmol/L", 1.9, 2.3, "7.1 corrected Ca < 2.1 (lower reference limit)"),
    "ica_critical_low": ParamRange("mmol/L", 0.6, 1.0, "7.1 ionised Ca < 0.8 (laboratory critical limits)"),
    "mg_urgent_low": ParamRange("mmol/L", 0.3, 0.7, "7.1 Mg < 0.5 mmol/L"),
    "phosphate_urgent_low": ParamRange("mmol/L", 0.2, 0.6, "7.1 phosphate < 0.32 mmol/L"),
    "albumin_pair_h": ParamRange("h", 6, 168, "15.2 albumin of the same sample period"),
    "albumin_reference_g_l": ParamRange("g/L", 35, 45, "15.2 corrected Ca = Ca + 0.02 x (40 - albumin)"),
    "albumin_ca_factor": ParamRange(
        "mmol/L per g/L", 0.015, 0.025, "15.2 factor 0.02 (published 0.017-0.025)"
    ),
    "hemolysed_note": ParamRange(
        SWITCH, 0, 1, "7.2 1 = 'repeat sample' note for a haemolysed high K, 0 = off"
    ),
}

#: Pairs that must stay ordered (lower < upper) whatever the site sets (redflags.config).
PARAM_ORDER: tuple[ParamOrder, ...] = (
    ParamOrder("k_critical_low", "k_urgent_low", "a critical low K is more extreme than an urgent one"),
    ParamOrder("k_urgent_low", "k_routine_low", "an urgent low K is more extreme than a routine one"),
    ParamOrder("k_urgent_high", "k_critical_high", "a critical high K is more extreme than an urgent one"),
    ParamOrder("ca_critical_low", "ca_routine_low", "a critical low Ca is more extreme than a routine one"),
    ParamOrder(
        "ca_routine_low", "ca_routine_high", "the normal calcium band lies between the two routine cut-offs"
    ),
    ParamOrder("ca_routine_high", "ca_urgent_high", "an urgent high Ca is more extreme than a routine one"),
    ParamOrder("ca_urgent_high", "ca_critical_high", "a critical high Ca is more extreme than an urgent one"),
)

WEAKNESS = ("proximal_weakness", "muscle_weakness_generalized")


def _between(cond: Cond, low: float, high: float) -> Cond:
    """low <= value < high."""
    return (cond >= low) < high


def _not_hemolysed(cond: Cond) -> Cond:
    return cond.where(m.hemolysed == 0, "on a sample not marked haemolysed")


def _preliminary(cond: Cond) -> Cond:
    return cond.where(m.prelim == 1, "(preliminary)")


def define(r: Rules, p: dict[str, float]) -> None:
    lab = p["lab_within_h"] * HOUR
    weak_window = p["weak_within_d"] * DAY
    pair = p["albumin_pair_h"] * HOUR

    # weak = any_leg_weakness OR proximal OR generalised weakness, within 7 days.
    r.derive("electrolyte_weakness", fact("any_leg_weakness", weak_window))
    for key in WEAKNESS:
        r.derive("electrolyte_weakness", present(key, weak_window))
    weak = fact("electrolyte_weakness")

    # Corrected calcium (15.2), derived once; the uncorrected fallback only when no albumin.
    # A result that carries only an interpretation cannot be corrected, nor correct one (15.2).
    calcium = latest("calcium_total", lab).where(has_number(m.v), "with a value")
    albumin = (
        latest("albumin")
        .where(has_number(m.v), "with a value")
        .where(
            (m.ts >= ref("calcium_total").ts - pair) & (m.ts <= ref("calcium_total").ts + pair),
            f"within {p['albumin_pair_h']:g} h of the calcium sample",
        )
    )
    reference, factor = p["albumin_reference_g_l"], p["albumin_ca_factor"]
    no_albumin = unless(
        (calcium, albumin), text=f"albumin within {p['albumin_pair_h']:g} h of the calcium: 0 result(s)"
    )
    r.derive(
        "calcium_corrected",
        calcium,
        albumin,
        value=lambda f: f[0]["v"] + factor * (reference - f[1]["v"]),
        text="corrected calcium {v:.2f} mmol/L",
    )
    r.derive(
        "calcium_corrected",
        calcium,
        no_albumin,
        value=lambda f: f[0]["v"],
        text="calcium {v:.2f} mmol/L, not corrected (no albumin)",
    )
    ca = fact("calcium_corrected")
    # Ionised calcium, when present, decides hypocalcaemia instead of the corrected value.
    ionized = latest("calcium_ionized", lab)
    no_ionized = unless(ionized, text=f"ionised calcium within {p['lab_within_h']:g} h: 0 result(s)")

    potassium = latest("potassium", lab)
    critical: list[tuple[tuple[Cond | Unless, ...], Code]] = [
        ((potassium < p["k_critical_low"],), HYPOKALEMIA),
        ((_not_hemolysed(potassium >= p["k_critical_high"]),), HYPERKALEMIA),
        ((ca >= p["ca_critical_high"],), HYPERCALCEMIA),
        ((ca < p["ca_critical_low"], no_ionized), HYPOCALCEMIA),
        ((ionized < p["ica_critical_low"],), HYPOCALCEMIA),
        ((weak, present("hypokalemic_periodic_paralysis")), HYPOKALEMIA),
    ]
    for conds, disorder in critical:
        r.fire("A", *conds, disorder=disorder)
    # A preliminary result supports tier A only (14.2); the card says so.
    for conds, _disorder in critical[:-1]:
        r.note("A", _preliminary(conds[0]), text="preliminary result, confirm on a final sample: {facts}")

    urgent: list[tuple[Cond, Code]] = [
        (_between(potassium, p["k_critical_low"], p["k_urgent_low"]), HYPOKALEMIA),
        (_not_hemolysed(_between(potassium, p["k_urgent_high"], p["k_critical_high"])), HYPERKALEMIA),
        (_between(ca, p["ca_urgent_high"], p["ca_critical_high"]), HYPERCALCEMIA),
        (latest("magnesium", lab) < p["mg_urgent_low"], HYPOMAGNESEMIA),
        (latest("phosphate", lab) < p["phosphate_urgent_low"], HYPOPHOSPHATEMIA),
    ]
    for cond, disorder in urgent:
        r.fire("B", weak, cond, disorder=disorder)

    r.fire("C", weak, _between(potassium, p["k_urgent_low"], p["k_routine_low"]), disorder=HYPOKALEMIA)
    r.fire("C", weak, (ca > p["ca_routine_high"]) < p["ca_urgent_high"], disorder=HYPERCALCEMIA)
    r.fire(
        "C",
        weak,
        _between(ca, p["ca_critical_low"], p["ca_routine_low"]),
        no_ionized,
        disorder=HYPOCALCEMIA,
    )

    if p["hemolysed_note"]:
        r.note(
            ("A", "B", "C"),
            (potassium >= p["k_urgent_high"]).where(m.hemolysed == 1, "on a haemolysed sample"),
            text="high potassium on a haemolysed sample was not used, repeat the sample: {facts}",
        )
