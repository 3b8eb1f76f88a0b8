"""The clinical logic: one module per syndrome, plus shared building blocks.

A module carries ``META`` (a ``RuleMeta``, or None for building blocks), ``PARAMS`` (thresholds
and windows, overridable by a site) and ``define(rules, params)``.
"""

from __future__ import annotations

from types import ModuleType

from rulesets import (
    b12_deficiency_neuropathy,
    cauda_equina_syndrome,
    common,
    deep_vein_thrombosis,
    guillain_barre_syndrome,
    peripheral_artery_disease,
)

MODULES: tuple[ModuleType, ...] = (
    common,
    cauda_equina_syndrome,
    guillain_barre_syndrome,
    deep_vein_thrombosis,
    peripheral_artery_disease,
    b12_deficiency_neuropathy,
)

__all__ = ["MODULES"]
