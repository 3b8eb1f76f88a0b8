"""Lyme neuroborreliosis (docs/rules/lyme_neuroborreliosis.md).

2020 IDSA/AAN/ACR Lyme disease guideline (Lantos 2021); EFNS guideline on European Lyme
neuroborreliosis (Mygland 2010) for the definite/possible grading; NICE NG95.

    neuro     = radicular pain, any leg weakness, arm weakness, facial weakness/palsy (one or
                both sides; a "Bell's palsy" code counts here: with exposure it is a peripheral
                facial palsy), or meningism/headache, recorded within 3 months, whose first
                onset was subacute: 12 h to 12 weeks ago
    exposure  = tick bite, erythema migrans or a Lyme disease diagnosis (current or past: the
                bite or rash is an event), or the latest serum Borrelia serology positive
                (interpretation POS/H/HH; without an interpretation, value >= the laboratory's
                cut-off referenceRange.high) -- dated no earlier than 3 months before the onset
                of that neurological finding; a tick bite or erythema migrans also no later than
                that onset (a bite after the palsy did not cause it), while a diagnosis or
                serology may follow it (11.1)
    FIRES (urgent) = exposure AND neuro
    csf_support    = latest CSF white cells (3 months) > 5 /uL; latest CSF Borrelia antibodies
                     positive (taken as intrathecal antibody production)
    Card note, EFNS grading: definite = neuro + CSF pleocytosis + intrathecal antibodies
    (3 of 3); possible = 2 of 3; otherwise the CSF is still needed.

Must not fire (11.2): positive serology without a neurological finding; tick bite without
symptoms; isolated Bell's palsy without exposure; long-standing non-specific symptoms; serology
older than 3 months before the onset, cancelled or entered in error.
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, WEEK, Rules, ever, fact, latest, m, present, ref
from rulesets.codes import CSF_CELL_COUNT, CSF_PROTEIN, LUMBAR_PUNCTURE, NEUROLOGY_REFERRAL
from rulesets.meta import LOINC, RXNORM, SNOMED, Action, Code, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="lyme_neuroborreliosis",
    version="1.1.0",
    title="Lyme neuroborreliosis",
    tiers=(Tier("A", "urgent", "neurological finding after Borrelia exposure"),),
    source_label="IDSA/AAN/ACR 2020 Lyme disease guideline; EFNS guideline on European Lyme "
    "neuroborreliosis (2010)",
    source_url="https://doi.org/10.1093/cid/ciaa1215",
    disorder=Code(SNOMED, "23502006", "Lyme disease"),
    actions=(
        Action(
            "Lumbar puncture: CSF cells, protein and paired serum/CSF Borrelia antibodies",
            (
                LUMBAR_PUNCTURE,
                CSF_CELL_COUNT,
                CSF_PROTEIN,
                Code(LOINC, "6318-0", "Borrelia burgdorferi Ab [Units/volume] in Cerebral spinal fluid"),
                Code(LOINC, "5060-9", "Borrelia burgdorferi Ab [Units/volume] in Serum"),
            ),
            "order",
            72,
        ),
        Action(
            "Neurology referral (same week)",
            (NEUROLOGY_REFERRAL,),
            "order",
            168,
        ),
        Action(
            "Antibiotics for neurological Lyme disease once diagnosed: oral doxycycline or IV "
            "ceftriaxone for 14-21 days",
            (Code(RXNORM, "3640", "Doxycycline"), Code(RXNORM, "2193", "Ceftriaxone")),
            "medication",
            72,
        ),
    ),
)

PARAMS: dict[str, float] = {
    "neuro_within_d": 90,  # neurological finding recorded within 3 months
    "onset_min_h": 12,  # subacute onset: first onset at least 12 h ago ...
    "onset_max_w": 12,  # ... and at most 12 weeks ago
    "exposure_before_onset_d": 90,  # exposure dated at most 3 months before the neuro onset
    "csf_within_d": 90,  # CSF results within 3 months
    "csf_wbc_max": 5,  # /uL; more is CSF pleocytosis (EFNS)
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "neuro_within_d": ParamRange("d", 14, 180, "11.1 neurological finding within 3 months"),
    "onset_min_h": ParamRange("h", 0, 72, "11.1 subacute onset at least 12 h ago"),
    "onset_max_w": ParamRange("weeks", 4, 26, "11.1 onset at most 12 weeks ago"),
    "exposure_before_onset_d": ParamRange("d", 14, 180, "11.1 exposure at most 3 months before onset"),
    "csf_within_d": ParamRange("d", 14, 180, "11.1 CSF within 3 months"),
    "csf_wbc_max": ParamRange("/uL", 4, 10, "11.1 CSF pleocytosis > 5 cells/uL (EFNS)"),
}

NEURO = ("radicular_pain", "arm_weakness", "facial_weakness", "bells_palsy", "meningism_headache")
#: Exposure records (11.1): key -> must it be dated on or before the neurological onset? A bite
#: or rash after the palsy did not cause it; a diagnosis (like serology) may follow the symptoms.
EXPOSURE_EVENTS: dict[str, bool] = {"tick_bite": True, "erythema_migrans": True, "lyme_dx": False}
#: Interpretation codes (v3-ObservationInterpretation) read as a positive antibody test.
POSITIVE = ("POS", "H", "HH")


def _positive(r: Rules, key: str, derived: str, within: float | None = None) -> None:
    """Derive ``derived`` from a positive latest ``key`` result (qualitative test, 14.2): the
    interpretation decides; a bare value is compared with the laboratory's cut-off
    (referenceRange.high)."""
    r.derive(
        derived, latest(key, within).where(m.interp.one_of(*POSITIVE), f"flagged {' or '.join(POSITIVE)}")
    )
    r.derive(
        derived,
        latest(key, within).where(
            m.interp.missing() & (m.has_high == 1) & (m.v >= m.high),
            "without a flag, at or above the laboratory cut-off",
        ),
    )


def define(r: Rules, p: dict[str, float]) -> None:
    lo, hi = p["onset_min_h"] * HOUR, p["onset_max_w"] * WEEK
    within = p["neuro_within_d"] * DAY
    lookback = p["exposure_before_onset_d"] * DAY
    csf_w = p["csf_within_d"] * DAY

    subacute = (m.first_onset_age >= lo) & (m.first_onset_age <= hi)

    tempo = f"begun {p['onset_min_h']:g} h to {p['onset_max_w']:g} weeks ago (subacute)"
    for key in NEURO:
        r.derive("lyme_neuro", present(key, within).where(subacute, tempo))
    r.derive("lyme_neuro", fact("any_leg_weakness", within).where(subacute, tempo))

    before_onset = m.onset_age <= ref("lyme_neuro").first_onset_age + lookback
    not_after_onset = m.onset_age >= ref("lyme_neuro").first_onset_age

    joined = f"dated no earlier than {p['exposure_before_onset_d']:g} days before its onset"
    for key, precedes in EXPOSURE_EVENTS.items():
        exposure = ever(key).where(before_onset, joined)
        if precedes:
            exposure = exposure.where(not_after_onset, "and not after it")
        r.fire("A", fact("lyme_neuro"), exposure)
    _positive(r, "lyme_ab_serum", "lyme_serology_positive")
    r.fire(
        "A",
        fact("lyme_neuro"),
        fact("lyme_serology_positive").where(
            m.first_onset_age <= ref("lyme_neuro").first_onset_age + lookback, joined
        ),
    )

    # EFNS grading (card note only): neurological finding, CSF pleocytosis, intrathecal antibodies.
    r.score_item("lyme_efns", 1, fact("lyme_neuro"), label="neurological finding")
    r.score_item("lyme_efns", 1, latest("csf_wbc", csf_w) > p["csf_wbc_max"], label="CSF pleocytosis")
    _positive(r, "lyme_ab_csf", "lyme_csf_antibodies_positive", csf_w)
    r.score_item(
        "lyme_efns", 1, fact("lyme_csf_antibodies_positive"), label="intrathecal Borrelia antibodies"
    )
    r.score("lyme_efns", "EFNS criteria {v:g} of 3")
    r.note("A", fact("lyme_efns") >= 3, text="EFNS grading definite Lyme neuroborreliosis: {facts}")
    r.note(
        "A",
        fact("lyme_efns").where(m.v == 2, "= 2"),
        text="EFNS grading possible Lyme neuroborreliosis: {facts}",
    )
    r.note(
        "A",
        fact("lyme_efns") < 2,
        text="EFNS grading needs the CSF (possible = 2 of 3, definite = 3 of 3 with CSF pleocytosis "
        "and intrathecal Borrelia antibodies): {facts}",
    )


__all__ = ["META", "PARAMS", "define"]
