"""The clinical logic: one module per syndrome, plus shared building blocks.

A module carries ``META`` (a ``RuleMeta``, or None for building blocks), ``PARAMS`` (thresholds
and windows, overridable by a site) and ``define(rules, params)``.
"""

from __future__ import annotations

from types import ModuleType

from rulesets import (
    cauda_equina_syndrome,
    common,
    guillain_barre_syndrome,
    lyme_neuroborreliosis,
    myasthenic_crisis_risk,
)

MODULES: tuple[ModuleType, ...] = (
    common,
    cauda_equina_syndrome,
    guillain_barre_syndrome,
    myasthenic_crisis_risk,
    lyme_neuroborreliosis,
)

__all__ = ["MODULES"]
