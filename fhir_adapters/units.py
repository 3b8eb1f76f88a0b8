"""Unit normalisation (red-flags.md section 15): every rule compares in one canonical unit.

A table, not a library: the rules need a few dozen exact conversions, some of them
analyte-specific (molar mass, valence) which no general UCUM library knows. An unknown unit
yields ``None`` (the value is missing), never a guess.
"""

from __future__ import annotations

import math

#: Same-dimension conversions: (from UCUM code, canonical UCUM code) -> factor.
GENERIC: dict[tuple[str, str], float] = {
    ("mL", "mL"): 1.0,
    ("L", "mL"): 1000.0,
    ("dL", "mL"): 100.0,
    ("kg", "kg"): 1.0,
    ("g", "kg"): 0.001,
    ("[lb_av]", "kg"): 0.45359237,
    ("mg/dL", "mg/dL"): 1.0,
    ("g/L", "mg/dL"): 100.0,
    ("mg/L", "mg/dL"): 0.1,
    ("g/dL", "mg/dL"): 1000.0,
    ("/uL", "/uL"): 1.0,
    ("/mm3", "/uL"): 1.0,
    ("10*6/L", "/uL"): 1.0,
    ("10*9/L", "/uL"): 1000.0,
    ("cm[H2O]", "cm[H2O]"): 1.0,
    ("mmol/L", "mmol/L"): 1.0,
    ("umol/L", "umol/L"): 1.0,
    ("nmol/L", "umol/L"): 0.001,
    ("mmol/L", "umol/L"): 1000.0,
    ("nmol/L", "nmol/L"): 1.0,
    ("pg/mL", "pg/mL"): 1.0,
    ("ng/L", "pg/mL"): 1.0,
    ("g/L", "g/L"): 1.0,
    ("g/dL", "g/L"): 10.0,
    ("U/L", "U/L"): 1.0,
    ("[IU]/L", "U/L"): 1.0,
    ("ukat/L", "U/L"): 60.0,
    ("mg/L", "mg/L"): 1.0,
    ("ug/mL", "mg/L"): 1.0,
    ("ng/mL", "mg/L"): 0.001,
    ("ug/L", "mg/L"): 0.001,
    ("cm", "cm"): 1.0,
    ("mm", "cm"): 0.1,
    ("/min", "/min"): 1.0,
    ("{beats}/min", "/min"): 1.0,
    ("%", "%"): 1.0,
    ("fL", "fL"): 1.0,
    ("Cel", "Cel"): 1.0,
    ("1", "1"): 1.0,
    ("{score}", "{score}"): 1.0,
    ("{score}", "1"): 1.0,
    ("1", "{score}"): 1.0,
    ("{ratio}", "1"): 1.0,
    ("{index}", "1"): 1.0,  # immunoassay index (sample / cut-off), e.g. Borrelia antibodies
    ("{Index_val}", "1"): 1.0,
}

#: Analyte-specific conversions: (finding key, from UCUM code) -> factor to the key's canonical unit.
ANALYTE: dict[tuple[str, str], float] = {
    ("b12_total", "pmol/L"): 1.355,  # molar mass ~1355 g/mol
    ("potassium", "meq/L"): 1.0,  # monovalent
    ("calcium_total", "mg/dL"): 0.2495,
    ("calcium_ionized", "mg/dL"): 0.2495,
    ("magnesium", "mg/dL"): 0.4114,
    ("magnesium", "meq/L"): 0.5,
    ("phosphate", "mg/dL"): 0.3229,
    ("creatinine", "mg/dL"): 88.4,
    ("glucose", "mg/dL"): 1 / 18.0,
}

#: Unit strings senders use instead of the UCUM code (read only when no UCUM code is given).
ALIASES: dict[str, str] = {
    "ml": "mL",
    "l": "L",
    "mmol/l": "mmol/L",
    "meq/l": "meq/L",
    "mEq/L": "meq/L",
    "mg/dl": "mg/dL",
    "pg/ml": "pg/mL",
    "pmol/l": "pmol/L",
    "u/l": "U/L",
    "iu/l": "U/L",
    "cmh2o": "cm[H2O]",
    "cm h2o": "cm[H2O]",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "beats/minute": "/min",
    "bpm": "/min",
    "/mm³": "/mm3",
    "cells/ul": "/uL",
    "cells/mm3": "/uL",
}


def ucum_code(quantity: dict) -> str | None:
    """The quantity's UCUM code, else its human unit string if it names a known unit."""
    code = quantity.get("code")
    system = quantity.get("system")
    if isinstance(code, str) and (system in (None, "http://unitsofmeasure.org")):
        return code
    unit = quantity.get("unit")
    if isinstance(unit, str):
        return ALIASES.get(unit.strip().lower(), ALIASES.get(unit.strip(), unit.strip()))
    return None


def normalise(key: str, value: float, unit: str | None, canonical: str | None) -> float | None:
    """``value`` in ``unit`` expressed in ``canonical``; ``None`` when the unit is unknown."""
    if not math.isfinite(value):
        return None
    if canonical is None:  # unitless scores: take the number as sent, or a dimensionless unit
        if unit in (None, ""):
            return value
        factor = GENERIC.get((unit, "1"))
        return None if factor is None else value * factor
    if unit is None or unit == "":
        return None
    factor = ANALYTE.get((key, unit)) or GENERIC.get((unit, canonical))
    return None if factor is None else value * factor
