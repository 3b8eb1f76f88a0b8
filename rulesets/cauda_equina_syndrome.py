"""Cauda equina syndrome (docs/rules/cauda_equina_syndrome.md).

GIRFT National Suspected CES Pathway (2023); the PVR > 200 mL cut-off and the 14-day "new
symptom" window come from NHS trust pathways and are parameters here.

    sphincter_or_saddle = new(saddle anaesthesia | urinary retention | urinary incontinence |
                              faecal incontinence, 14 d)  OR  latest(PVR, 24 h) > 200 mL
    back_or_radicular   = present(back pain | sciatica | leg pain | leg numbness, 14 d)
                          OR any leg weakness within 14 d
    bilateral_radicular = bilateral(sciatica | leg numbness | leg weakness), within 14 d
    TIER A (critical)   = sphincter_or_saddle AND back_or_radicular  OR  new(CES diagnosis, 14 d)
                          unless a spinal decompression was done after the triggering finding
    TIER B (urgent)     = bilateral_radicular AND present(back pain | sciatica, 14 d)
                          unless spinal_cord_compression fires at tier A (0.3a), or a spinal
                          decompression was done after the bilateral symptoms began (1.3:
                          post-operative follow-up is out of scope)

Inside the 14-day window the order of the findings does not matter (1.3): retention recorded on
day 1 and back pain on day 5 is tier A exactly as back pain first and retention after. What
began before the window (a catheterised patient, long-standing incontinence) is not ``new``.
The decompression block needs a triggering finding that began before the operation: when every
sphincter or saddle finding began after it (e.g. a post-operative haematoma), that is a new
emergency and tier A still fires.
"""

from __future__ import annotations

from engine.dsl import DAY, HOUR, Cond, Rules, fact, latest, m, new, present, procedure, ref
from rulesets.codes import MRI_SPINE, NEUROSURGERY_REFERRAL, SPINAL_DECOMPRESSION, ULTRASOUND
from rulesets.meta import LOINC, SNOMED, Action, Code, ParamRange, RuleMeta, Tier

META = RuleMeta(
    id="cauda_equina_syndrome",
    version="1.2.0",
    title="Cauda equina syndrome",
    tiers=(
        Tier("A", "critical", "sphincter or saddle red flags: emergency MRI"),
        Tier("B", "urgent", "bilateral radicular symptoms: same-day MRI"),
    ),
    source_label="GIRFT National Suspected Cauda Equina Syndrome Pathway (2023); HSSIB investigation (2021)",
    source_url=(
        "https://hssib.org.uk/patient-safety-investigations/timely-detection-and-treatment-of-spinal-"
        "nerve-compression-cauda-equina-syndrome-in-patients-with-back-pain/investigation-report"
    ),
    disorder=Code(SNOMED, "192970008", "Cauda equina syndrome"),
    actions=(
        Action(
            "Emergency MRI of the lumbosacral spine (whole spine if the level is unclear); "
            "scan within 4 h of request, report within 1 h",
            (
                Code(LOINC, "91717-9", "MR Spine Lumbar and Sacrum WO contrast"),
                Code(LOINC, "30679-5", "MR Lumbar spine WO contrast"),
                MRI_SPINE,
            ),
            "order",
            4,
        ),
        Action(
            "Bladder scan with post-void residual volume; catheterise if in retention "
            "(must not delay the MRI)",
            (
                ULTRASOUND,
                Code(SNOMED, "45211000", "Insertion of catheter"),
            ),
            "order",
            1,
        ),
        Action(
            "Documented neurological examination including saddle sensation and anal tone",
            (),
            "task",
            0.5,
        ),
        Action(
            "Referral to the on-call spinal/neurosurgical team",
            (NEUROSURGERY_REFERRAL,),
            "order",
            4,
        ),
        Action(
            "Surgical decompression if compression is confirmed (decided by the surgeon)",
            (SPINAL_DECOMPRESSION,),
            "order",
            24,
        ),
    ),
    suppressed_by=(("spinal_cord_compression", "A", "B"),),
)

PARAMS: dict[str, float] = {
    "window_days": 14,  # "new" symptom window
    "pvr_ml": 200,  # post-void residual above which retention is a red flag
    "pvr_within_h": 24,
}

#: Unit and plausible range of each parameter (the rule's page in docs/rules/, or why the range is safe);
#: a site value outside it stops the run (redflags.config).
PARAM_RANGES: dict[str, ParamRange] = {
    "window_days": ParamRange(
        "d", 1, 28, "1.3 new-symptom window 14 d; 0 sees nothing, > 4 weeks is no longer new"
    ),
    "pvr_ml": ParamRange(
        "mL", 100, 500, "1.1 PVR > 200 mL; 100-500 mL spans the published retention cut-offs"
    ),
    "pvr_within_h": ParamRange(
        "h", 1, 72, "1.1 bladder scan within 24 h; older does not describe retention now"
    ),
}

#: new() within the window: what began before it is long-standing and does not count (1.3).
SPHINCTER_OR_SADDLE = ("saddle_anesthesia", "urinary_retention", "urinary_incontinence", "fecal_incontinence")
BACK_OR_RADICULAR = ("back_pain", "sciatica", "leg_pain", "leg_numbness")
BILATERAL_RADICULAR = ("bilateral_sciatica", "bilateral_leg_numbness", "bilateral_leg_weakness")


def decompressed_after(finding: str) -> Cond:
    """Spinal decompression done at or after the onset of the earlier condition ``finding``."""
    return procedure("spinal_decompression_done").where(m.ts >= ref(finding).onset, "after it")


def define(r: Rules, p: dict[str, float]) -> None:
    window = p["window_days"] * DAY

    for key in SPHINCTER_OR_SADDLE:
        r.derive("ces_sphincter_or_saddle", new(key, window))
    r.derive("ces_sphincter_or_saddle", latest("pvr_volume", p["pvr_within_h"] * HOUR) > p["pvr_ml"])

    for key in BACK_OR_RADICULAR:
        r.derive("ces_back_or_radicular", present(key, window))
    r.derive("ces_back_or_radicular", fact("any_leg_weakness", window))

    for key in BILATERAL_RADICULAR:
        r.derive("ces_bilateral_radicular", fact(key, window))

    r.fire("A", fact("ces_sphincter_or_saddle"), fact("ces_back_or_radicular"))
    r.fire("A", new("ces_dx", window))

    r.block(
        "A",
        fact("ces_sphincter_or_saddle").where(m.onset >= 0, "dated"),
        decompressed_after("ces_sphincter_or_saddle"),
        reason="spinal decompression already performed after the triggering finding",
    )
    r.block(
        "A",
        new("ces_dx", window),
        decompressed_after("ces_dx"),
        reason="spinal decompression already performed after the diagnosis",
    )

    for key in ("back_pain", "sciatica"):
        r.fire("B", fact("ces_bilateral_radicular"), present(key, window))
    r.block(
        "B",
        fact("ces_bilateral_radicular").where(m.onset >= 0, "dated"),
        decompressed_after("ces_bilateral_radicular"),
        reason="spinal decompression already performed after the bilateral symptoms began",
    )
