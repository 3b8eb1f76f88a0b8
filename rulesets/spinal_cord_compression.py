"""Spinal cord compression, including malignant (MSCC) and post-injury
(docs/rules/spinal_cord_compression.md).

NICE NG234 *Spinal metastases and metastatic spinal cord compression* (2023): whole-spine MRI
the same day (within 24 h) for suspected MSCC with neurological signs, within a week for spinal
pain suggestive of metastases; NICE NG41 *Spinal injury* (2016) for the post-injury branch.

    window = 30 days
    neuro_deficit (any, within the window):
        new leg weakness (leg weakness, paraplegia/paraparesis or hemiparesis first recorded
        within 30 d; or a weakness progression (0.2) that happened entirely within 30 d)
        | leg numbness | sensory level | gait difficulty | hyperreflexia | spasticity
        | new urinary retention | new faecal incontinence
    spinal_pain  = present(back pain, 30 d)
    known_cancer = any cancer or bone-metastasis record, also resolved/in remission; never a
                   refuted or entered-in-error one (common.known_cancer)

    A1 malignant:    known_cancer AND spinal_pain AND neuro_deficit
    A2 post-injury:  spinal cord injury | spinal trauma (current or within 30 d)
                     AND weakness progression (0.2) whose evidence all lies after the injury
                     and within 30 d
    A3 infective/other: spinal_pain AND neuro_deficit
                     AND (fever within 7 d | injecting drug use | anticoagulant active)
    A4 diagnosis:    cord compression Condition, current, onset/recorded within 30 d
    A5 cord pattern: new weakness of both legs (within 30 d)
                     AND (hyperreflexia | spasticity | sensory level, within 30 d)
    TIER A (critical) = A1 | A2 | A3 | A4 | A5
    TIER B (urgent)   = known_cancer AND spinal_pain (no neurological deficit yet)

    Neither tier is raised when a spinal decompression or spinal radiotherapy was completed at
    or after the newest finding of the branch, or when a cord compression Condition that began
    or abated after those findings is already resolved (4.3).
    While tier A fires, cauda_equina_syndrome tier B is suppressed (0.3a; declared there).

"New" weakness is read from finding records (their earliest onset, 0.2); an MRC grade alone
carries no onset (a monthly MRC 0 of an old paraplegia is not new), so MRC grades count only
through a documented fall (progression).
"""

from __future__ import annotations

from collections.abc import Callable

from engine.dsl import DAY, Rules, ever, fact, m, medication, new, present, procedure, ref
from rulesets.codes import ENOXAPARIN, MRI_SPINE, NEUROSURGERY_REFERRAL, SPINAL_DECOMPRESSION, ULTRASOUND
from rulesets.meta import RXNORM, SNOMED, Action, Code, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="spinal_cord_compression",
    version="1.1.0",
    title="Spinal cord compression",
    tiers=(
        Tier("A", "critical", "cord compression suspected: whole-spine MRI within 24 h"),
        Tier("B", "urgent", "known cancer with spinal pain: MRI within a week"),
    ),
    source_label="NICE NG234 Spinal metastases and metastatic spinal cord compression (2023)",
    source_url="https://www.nice.org.uk/guidance/ng234",
    disorder=Code(SNOMED, "71286001", "Spinal cord compression"),
    actions=(
        Action(
            "MRI of the whole spine now (within 24 h at most)",
            (MRI_SPINE,),
            "order",
            24,
            tiers=("A",),
        ),
        Action(
            "MRI of the whole spine within 1 week (suspected spinal metastases)",
            (MRI_SPINE,),
            "order",
            168,
            tiers=("B",),
        ),
        Action(
            "Dexamethasone for suspected MSCC with a neurological deficit (usually 16 mg, then "
            "per oncology); hold if lymphoma is suspected until discussed",
            (Code(RXNORM, "3264", "Dexamethasone"),),
            "medication",
            1,
            tiers=("A",),
        ),
        Action(
            "Keep the spine neutral (flat bed rest) if pain or instability suggests a mechanically "
            "unstable spine, until the imaging is reviewed",
            (),
            "task",
            0.5,
        ),
        Action(
            "Contact the MSCC coordinator / oncology at the same time as the MRI request",
            (Code(SNOMED, "183529009", "Referral to oncologist"),),
            "order",
            1,
        ),
        Action(
            "Spinal surgery opinion after the MRI",
            (NEUROSURGERY_REFERRAL,),
            "order",
            24,
            tiers=("A",),
        ),
        Action(
            "Surgical decompression if compression is confirmed (decided by the surgeon)",
            (SPINAL_DECOMPRESSION,),
            "order",
            24,
            tiers=("A",),
        ),
        Action(
            "Radiotherapy opinion after the MRI",
            (Code(SNOMED, "306256000", "Referral to radiotherapist"),),
            "order",
            24,
        ),
        Action(
            "Bladder scan if urinary retention is suspected (same day)",
            (ULTRASOUND,),
            "order",
            12,
            tiers=("A",),
        ),
        Action(
            "VTE prophylaxis while immobile (same day)",
            (ENOXAPARIN,),
            "medication",
            12,
            tiers=("A",),
        ),
    ),
)

PARAMS: dict[str, float] = {
    "window_neuro_d": 30,  # days: new neurological deficit, spinal pain, cord signs (NG234)
    "dx_within_d": 30,  # days: cord compression Condition onset/recorded
    "injury_within_d": 30,  # days: spinal cord injury / spinal trauma current or abated within
    "progression_within_d": 30,  # days: all evidence of a post-injury progression (NG41)
    "fever_within_d": 7,  # days: fever as infective risk (epidural abscess)
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "window_neuro_d": ParamRange("d", 7, 90, "4.1 new deficit within 30 days (NICE NG234)"),
    "dx_within_d": ParamRange(
        "d", 7, 90, "4.1: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "injury_within_d": ParamRange(
        "d", 7, 90, "4.4: look-back window; 0 sees nothing, much longer mixes in old episodes"
    ),
    "progression_within_d": ParamRange("d", 7, 90, "4.4 post-injury progression (NICE NG41)"),
    "fever_within_d": ParamRange(
        "d",
        1,
        30,
        "4.1 fever as infective risk: look-back window; 0 sees nothing, much longer mixes in old episodes",
    ),
}

#: Findings that are a neurological deficit when present within the window (4.1).
DEFICITS_PRESENT = ("leg_numbness", "sensory_level", "gait_difficulty", "hyperreflexia", "spasticity")
#: Findings that count only when new (first onset within the window).
DEFICITS_NEW = (
    "leg_weakness",
    "paraplegia_paraparesis",
    "hemiparesis",
    "urinary_retention",
    "fecal_incontinence",
)
CORD_SIGNS = ("hyperreflexia", "spasticity", "sensory_level")
INJURIES = ("spinal_cord_injury", "spinal_trauma")
TREATMENTS = ("spinal_decompression_done", "spinal_radiotherapy_done")

#: Stands in for "no finding time known": such a trigger is never treated as already operated on.
_UNKNOWN_TIME = 2**53


def _newest_onset(*indexes: int) -> Callable[[list[dict]], float]:
    """Derived value: the newest onset among the given matched facts (the branch's findings)."""

    def value(facts: list[dict]) -> float:
        times = [facts[i].get("onset", facts[i].get("ts")) for i in indexes]
        known = [t for t in times if isinstance(t, int | float)]
        return max(known) if known else _UNKNOWN_TIME

    return value


def define(r: Rules, p: dict[str, float]) -> None:
    window = p["window_neuro_d"] * DAY

    # Neurological deficit (any one, within the window).
    for key in DEFICITS_NEW:  # new on its side: an old weakness of one leg hides no new one (3.3)
        r.derive("scc_neuro_deficit", new(key, window, on_side=True))
    r.derive("scc_neuro_deficit", fact("weakness_progression").begun(up_to=window))
    for key in DEFICITS_PRESENT:
        r.derive("scc_neuro_deficit", present(key, window))

    r.derive("scc_spinal_pain", present("back_pain", window))

    # New weakness of both legs (A5).
    r.derive(
        "scc_bilateral_weakness",
        new("leg_weakness", window, on_side=True).on("bilateral"),
    )
    r.derive(
        "scc_bilateral_weakness",
        new("leg_weakness", window, on_side=True).on("left"),
        new("leg_weakness", window, on_side=True).on("right"),
        side=lambda _f: "bilateral",
    )
    r.derive("scc_bilateral_weakness", new("paraplegia_paraparesis", window, on_side=True))
    r.derive(
        "scc_bilateral_weakness",
        fact("bilateral_leg_weakness"),
        fact("weakness_progression").begun(up_to=window),
        side=lambda _f: "bilateral",
    )

    # A1 malignant.
    r.derive(
        "scc_a",
        fact("known_cancer"),
        fact("scc_spinal_pain"),
        fact("scc_neuro_deficit"),
        value=_newest_onset(1, 2),
        text="A1 known cancer + spinal pain + new neurological deficit",
    )
    # A2 post-injury: a progression whose evidence all lies after the injury and within the
    # window (a fall in grade years ago, or across the injury itself, is not progression now).
    for injury in INJURIES:
        r.derive(
            "scc_a",
            present(injury, p["injury_within_d"] * DAY),
            fact("weakness_progression")
            .where(m.onset >= ref(injury).onset, "all after the injury")
            .begun(up_to=p["progression_within_d"] * DAY),
            value=lambda f: f[1].get("ts", _UNKNOWN_TIME),  # the progression's newest evidence
            text="A2 weakness progressing after a spinal injury",
        )
    # A3 infective or other (abscess, haematoma).
    risks = (
        present("fever", p["fever_within_d"] * DAY),
        present("iv_drug_use"),
        medication("anticoagulant_active"),
    )
    for risk in risks:
        r.derive(
            "scc_a",
            fact("scc_spinal_pain"),
            fact("scc_neuro_deficit"),
            risk,
            value=_newest_onset(0, 1),
            text="A3 spinal pain + new neurological deficit + infection/bleeding risk",
        )
    # A4 diagnosis.
    r.derive(
        "scc_a",
        present("cord_compression_dx").where(
            m.onset_age <= p["dx_within_d"] * DAY, f"diagnosed within {p['dx_within_d']:g} days"
        ),
        value=_newest_onset(0),
        text="A4 cord compression diagnosed",
    )
    # A5 cord pattern without cancer.
    for sign in CORD_SIGNS:
        r.derive(
            "scc_a",
            fact("scc_bilateral_weakness"),
            present(sign, window),
            value=_newest_onset(0, 1),
            text="A5 new weakness of both legs with a cord sign",
        )

    # Tier B: suspected spinal metastases, no deficit yet.
    r.derive(
        "scc_b",
        fact("known_cancer"),
        fact("scc_spinal_pain"),
        value=_newest_onset(1),
        text="B known cancer + spinal pain",
    )

    r.fire("A", fact("scc_a"))
    r.fire("B", fact("scc_b"))

    # Already treated: decompression or radiotherapy on or after the branch's newest finding, or
    # a cord compression Condition of this episode already resolved (4.3).
    for trigger, tier in (("scc_a", "A"), ("scc_b", "B")):
        for done in TREATMENTS:
            r.block(
                tier,
                fact(trigger),
                procedure(done).where(m.ts >= ref(trigger).v, "on or after the findings"),
                reason=f"{done.replace('_', ' ')} already completed after the findings",
            )
        # A resolved cord compression that began or abated after the branch's newest finding.
        r.block(
            tier,
            fact(trigger),
            ever("cord_compression_dx")
            .where(m.cur == 0, "resolved")
            .where(
                (m.onset >= ref(trigger).v) | (m.abated >= ref(trigger).v),
                "begun or abated after the findings",
            ),
            reason="cord compression of this episode already resolved",
        )
