"""Unit normalisation (docs/clinical-policy.md#units): every rule compares in one canonical unit.

Decision: a small table, checked against a UCUM library in the tests, not a library at run time.

- Half of the conversions are analyte-specific (molar mass for calcium, magnesium, phosphate,
  creatinine, glucose and B12; valence for magnesium in meq/L; the IU/L = U/L convention for
  enzymes): no UCUM library can know these, so a table is needed whatever else is used.
- For the dimensional half, the one PyPI library that installs and runs here, ucumvert (0.3.x,
  beta, UCUM on top of pint), adds ~0.7 s to every start and ~2 ms per uncached conversion,
  and cannot read bare annotations (``{score}``) or take IU/L as U/L (rightly, for UCUM);
  ucumate needs a Java 21 JVM through JPype (this machine has 17), pyucum (2019) wraps a web
  API, and pint alone does not read UCUM codes.
- A closed list of accepted units is a safety property: any other unit makes the value
  missing (with an issue), never a guess.

Each unit is defined once, by its dimension and its exact size, so every conversion works in
both directions. ``tests/test_units_times.py`` checks every size against ucumvert's UCUM
definitions, every analyte factor against the molar mass, and every 15.1/15.2 example.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Any

F = Fraction

#: Accepted UCUM codes -> (dimension, exact size in that dimension's first unit). Dimensions
#: that UCUM would merge are kept apart where merging would be wrong for a rule: ``eq/L`` (UCUM
#: says eq = mol; the valence is the analyte's), ``[IU]/L`` (arbitrary units; U/L only for
#: enzymes) and ``%`` (a saturation sent as 0.97 with unit 1 is not read as 97 %).
UNITS: dict[str, tuple[str, Fraction]] = {
    "L": ("volume", F(1)),
    "dL": ("volume", F(1, 10)),
    "mL": ("volume", F(1, 10**3)),
    "fL": ("volume", F(1, 10**15)),
    "kg": ("mass", F(1)),
    "g": ("mass", F(1, 10**3)),
    "[lb_av]": ("mass", F("0.45359237")),
    "g/L": ("mass/volume", F(1)),
    "g/dL": ("mass/volume", F(10)),
    "mg/dL": ("mass/volume", F(1, 100)),
    "mg/L": ("mass/volume", F(1, 10**3)),
    "ug/mL": ("mass/volume", F(1, 10**3)),
    "ug/L": ("mass/volume", F(1, 10**6)),
    "ng/mL": ("mass/volume", F(1, 10**6)),
    "ng/L": ("mass/volume", F(1, 10**9)),
    "pg/mL": ("mass/volume", F(1, 10**9)),
    # D-dimer reported as fibrinogen-equivalent units; DDU is never read as FEU (15.1)
    "mg/L{FEU}": ("mass/volume", F(1, 10**3)),
    "ug/mL{FEU}": ("mass/volume", F(1, 10**3)),
    "ug/L{FEU}": ("mass/volume", F(1, 10**6)),
    "ng/mL{FEU}": ("mass/volume", F(1, 10**6)),
    # ... and D-dimer units (a dimension of their own: only the DDU key bridges it, below)
    "mg/L{DDU}": ("mass/volume{DDU}", F(1, 10**3)),
    "ug/mL{DDU}": ("mass/volume{DDU}", F(1, 10**3)),
    "ug/L{DDU}": ("mass/volume{DDU}", F(1, 10**6)),
    "ng/mL{DDU}": ("mass/volume{DDU}", F(1, 10**6)),
    "mmol/L": ("substance/volume", F(1, 10**3)),
    "umol/L": ("substance/volume", F(1, 10**6)),
    "nmol/L": ("substance/volume", F(1, 10**9)),
    "pmol/L": ("substance/volume", F(1, 10**12)),
    "meq/L": ("eq/L", F(1, 10**3)),
    "/uL": ("number/volume", F(10**6)),
    "/mm3": ("number/volume", F(10**6)),
    "10*6/L": ("number/volume", F(10**6)),
    "10*9/L": ("number/volume", F(10**9)),
    "10*3/uL": ("number/volume", F(10**9)),
    "ukat/L": ("catalytic/volume", F(1, 10**6)),
    "U/L": ("catalytic/volume", F(1, 60 * 10**6)),  # 1 U = 1 umol/min = 1/60 ukat
    "[IU]/L": ("[IU]/L", F(1)),
    "cm": ("length", F(1, 100)),
    "mm": ("length", F(1, 10**3)),
    "cm[H2O]": ("pressure", F(1)),
    "/min": ("rate", F(1)),
    "{beats}/min": ("rate", F(1)),
    "%": ("%", F(1)),
    "1": ("1", F(1)),
    "{score}": ("1", F(1)),
    "{ratio}": ("1", F(1)),
    "{index}": ("1", F(1)),  # immunoassay index (sample / cut-off), e.g. Borrelia antibodies
    "{Index_val}": ("1", F(1)),
}

#: Analyte-specific bridges between dimensions, as docs/clinical-policy.md#units states them: key ->
#: (from unit, to unit, factor). Any unit of either dimension converts through them.
_CALCIUM = (("mg/dL", "mmol/L", F("0.2495")),)  # 40.08 g/mol
_ENZYME = (("[IU]/L", "U/L", F(1)),)
ANALYTE: dict[str, tuple[tuple[str, str, Fraction], ...]] = {
    "b12_total": (("pmol/L", "pg/mL", F("1.355")),),  # ~1355 g/mol
    "potassium": (("meq/L", "mmol/L", F(1)),),  # monovalent
    "calcium_total": _CALCIUM,
    "calcium_ionized": _CALCIUM,
    "magnesium": (("mg/dL", "mmol/L", F("0.4114")), ("meq/L", "mmol/L", F(1, 2))),  # divalent
    "phosphate": (("mg/dL", "mmol/L", F("0.3229")),),  # as phosphorus, 30.97 g/mol
    "creatinine": (("mg/dL", "umol/L", F("88.4")),),
    "glucose": (("mg/dL", "mmol/L", F(1, 18)),),  # "divide by 18.0"
    "d_dimer_ddu": (("mg/L{DDU}", "mg/L", F(1)),),  # a DDU-coded result in DDU units
    "ck": _ENZYME,
    "ggt": _ENZYME,
}

#: Unit strings senders use instead of a UCUM code (lower case; read after folding, below).
ALIASES: dict[str, str] = {
    "meq/l": "meq/L",
    "iu/l": "[IU]/L",
    "cmh2o": "cm[H2O]",
    "cm h2o": "cm[H2O]",
    "lb": "[lb_av]",
    "lbs": "[lb_av]",
    "beats/minute": "/min",
    "bpm": "/min",
    "/mm³": "/mm3",
    "cells/ul": "/uL",
    "cells/mm3": "/uL",
    "{cells}/ul": "/uL",
    "10^6/l": "10*6/L",
    "10^9/l": "10*9/L",
    "mg/l feu": "mg/L{FEU}",
    "ug/ml feu": "ug/mL{FEU}",
    "ng/ml feu": "ng/mL{FEU}",
    "mg/l ddu": "mg/L{DDU}",
    "ug/ml ddu": "ug/mL{DDU}",
    "ng/ml ddu": "ng/mL{DDU}",
}

#: The accepted codes by lower case: no two of them differ by case alone, so "mg/dl" or "ML"
#: can only mean one accepted unit (UCUM itself allows "l" for the litre).
_FOLDED = {code.lower(): code for code in UNITS}


def _accepted(text: str) -> str:
    """``text`` as an accepted code if it spells one (case, µ, known aliases); else unchanged."""
    if text in UNITS:
        return text
    folded = text.strip().replace("µ", "u").replace("μ", "u").lower()
    return ALIASES.get(folded) or _FOLDED.get(folded) or text.strip()


def ucum_code(quantity: dict[str, Any]) -> str | None:
    """The quantity's UCUM code, else its human unit string, as an accepted code if possible."""
    code = quantity.get("code")
    system = quantity.get("system")
    if isinstance(code, str) and (system in (None, "http://unitsofmeasure.org")):
        return _accepted(code)
    unit = quantity.get("unit")
    if isinstance(unit, str):
        return _accepted(unit)
    return None


@lru_cache(maxsize=4096)  # bounded: unit strings come from senders
def exact_factor(key: str, unit: str, target: str) -> Fraction | None:
    """What multiplies a ``key`` value in ``unit`` to give it in ``target``, exactly; None if
    nothing does."""
    have, want = UNITS.get(unit), UNITS.get(target)
    if have is None or want is None:
        return None
    if have[0] == want[0]:
        return have[1] / want[1]
    for src, dst, ratio in ANALYTE.get(key, ()):
        (src_dim, src_size), (dst_dim, dst_size) = UNITS[src], UNITS[dst]
        if (have[0], want[0]) == (src_dim, dst_dim):
            return have[1] / src_size * ratio * dst_size / want[1]
        if (have[0], want[0]) == (dst_dim, src_dim):
            return have[1] / dst_size / ratio * src_size / want[1]
    return None


def factor(key: str, unit: str, target: str) -> float | None:
    """``exact_factor`` as a float (for display and tests)."""
    ratio = exact_factor(key, unit, target)
    return None if ratio is None else float(ratio)


def convert(key: str, value: float, unit: str, target: str) -> float | None:
    """``value`` (of analyte ``key``) in ``unit`` expressed in ``target``; None when impossible.

    The product is computed exactly and rounded once, so a value that sits exactly on a cut-off
    in its own unit lands exactly on that cut-off in the canonical unit (60 mg/dL of glucose is
    the float nearest 10/3 mmol/L, which is also what ``60 / 18`` gives; a float product
    ``60 * (1/18)`` falls one step below it and read as "< 60 mg/dL", docs/clinical-policy.md#units).
    """
    ratio = exact_factor(key, unit, target)
    if ratio is None or not math.isfinite(value):
        return None
    try:
        return value if ratio == 1 else float(Fraction(value) * ratio)
    except OverflowError:  # 1e308 g/L in mg/dL: no float holds it, so no value was given
        return None


def normalise(key: str, value: float, unit: str | None, canonical: str | None) -> float | None:
    """``value`` in ``unit`` expressed in ``canonical``; ``None`` when the unit is unknown."""
    if not math.isfinite(value):
        return None
    if canonical is None:  # unitless scores: take the number as sent, or a dimensionless unit
        return value if unit in (None, "") else convert(key, value, unit, "1")
    if unit is None or unit == "":
        return None
    if unit == canonical and unit in UNITS:  # most results: sent in the unit the rules read
        return value  # what ``convert`` gives: the factor of a unit to itself is exactly 1
    return convert(key, value, unit, canonical)
