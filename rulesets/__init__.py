"""The clinical logic: one module per syndrome, plus shared building blocks.

A module carries ``META`` (a ``RuleMeta``, or None for building blocks), ``PARAMS`` (thresholds
and windows, overridable by a site) and ``define(rules, params)``; ``common`` also carries
the policy every rule shares (``PRELIMINARY_SUPPORTS``, from ``rulesets.policy``), which the
engine reads from its modules. ``MODULES`` lists the shared building blocks first, then the
rules in the order of docs/rules/README.md.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from rulesets import (
    acute_stroke_or_tia,
    alcoholic_myopathy,
    b12_deficiency_neuropathy,
    cauda_equina_syndrome,
    common,
    deep_vein_thrombosis,
    guillain_barre_syndrome,
    hypokalemic_or_electrolyte_weakness,
    lyme_neuroborreliosis,
    myasthenic_crisis_risk,
    peripheral_artery_disease,
    rhabdomyolysis,
    spinal_cord_compression,
)
from rulesets.meta import RuleMeta

MODULES: tuple[ModuleType, ...] = (
    common,
    cauda_equina_syndrome,
    guillain_barre_syndrome,
    acute_stroke_or_tia,
    spinal_cord_compression,
    deep_vein_thrombosis,
    myasthenic_crisis_risk,
    hypokalemic_or_electrolyte_weakness,
    b12_deficiency_neuropathy,
    peripheral_artery_disease,
    alcoholic_myopathy,
    lyme_neuroborreliosis,
    rhabdomyolysis,
)

#: The rules by public id (modules with a ``META``): what a process that runs no engine needs.
RULES: dict[str, RuleMeta] = {m.META.id: m.META for m in MODULES if getattr(m, "META", None)}

#: The built-in FHIR ValueSets that map codes to the finding keys the rules read: clinical
#: knowledge versioned with the rules; the composing layer hands the folder to the terminology.
VALUESET_DIR = Path(__file__).resolve().parent / "valuesets"

__all__ = ["MODULES", "RULES", "VALUESET_DIR"]
