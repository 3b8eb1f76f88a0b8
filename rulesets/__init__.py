"""The clinical logic: one module per syndrome, plus shared building blocks.

A module carries ``META`` (a ``RuleMeta``, or None for building blocks), ``PARAMS`` (thresholds
and windows, overridable by a site) and ``define(rules, params)``.
"""

from __future__ import annotations

from types import ModuleType

from rulesets import (
    acute_stroke_or_tia,
    cauda_equina_syndrome,
    common,
    guillain_barre_syndrome,
    spinal_cord_compression,
)

MODULES: tuple[ModuleType, ...] = (
    common,
    cauda_equina_syndrome,
    guillain_barre_syndrome,
    acute_stroke_or_tia,
    spinal_cord_compression,
)

__all__ = ["MODULES"]
