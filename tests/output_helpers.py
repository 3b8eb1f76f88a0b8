"""Alerts and rule metadata the output tests share (Flag, CarePlan, tenant identifiers)."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.alert import Alert, Criterion
from rulesets.meta import LOINC, SNOMED, Action, Code, RuleMeta, Tier

NOW = 1741608000  # 2025-03-10T12:00:00Z

CES = RuleMeta(
    id="cauda_equina_syndrome",
    version="1.0.0",
    title="Cauda equina syndrome",
    tiers=(
        Tier("A", "critical", "sphincter or saddle signs"),
        Tier("B", "urgent", "bilateral sciatica with leg signs"),
        Tier("C", "routine", "back pain to follow up"),
    ),
    source_label="NICE CKS",
    source_url="https://cks.nice.org.uk/",
    disorder=Code(SNOMED, "192970008", "Cauda equina syndrome"),
    actions=(
        Action("Emergency MRI spine", (Code(LOINC, "36531-2", "MR Spine WO contrast"),),
               "order", 4, ("A", "B")),
        Action("Documented neurological exam", (), "task", 0),
        Action("Surgical decompression if compression confirmed",
               (Code(SNOMED, "10836008", "Decompression of spinal cord"),), "procedure", 48,
               ("A",)),
    ),
)  # fmt: skip

DVT = RuleMeta(
    id="deep_vein_thrombosis",
    version="1.0.0",
    title="Deep vein thrombosis",
    tiers=(Tier("A", "urgent", "Wells likely"),),
    source_label="NICE NG158",
    source_url="https://www.nice.org.uk/guidance/ng158",
    disorder=Code(SNOMED, "128053003", "Deep venous thrombosis"),
    actions=(Action("Proximal leg vein ultrasound", (), "order", 4),),
)


def make_alert(**changes: Any) -> Alert:
    base = Alert(
        patient="Patient/v01",
        rule="cauda_equina_syndrome",
        version="1.0.0",
        tier="A",
        severity="critical",
        title="Cauda equina syndrome",
        rationale="New urinary retention with saddle anaesthesia.",
        criteria=(
            Criterion("saddle anaesthesia", ("Observation/saddle",)),
            Criterion("urinary retention", ("Condition/retention",)),
        ),
        evidence=("Observation/saddle", "Condition/retention"),
        now=NOW,
        episode="2025-03-09",
    )
    return dataclasses.replace(base, **changes)
