"""Physiologically possible values (docs/clinical-policy.md#plausibility).

A result outside these bounds cannot be a real measurement (a unit or transcription error, a
contaminated sample): it is treated as *missing*, never as "critically abnormal", and reported
as a data-quality issue. Bounds are in the canonical unit of the key (docs/clinical-policy.md#units), so they
are checked after unit normalisation; a key without bounds is never rejected here.
"""

from __future__ import annotations

#: finding key -> (lowest possible, highest possible), inclusive, in the key's canonical unit.
BOUNDS: dict[str, tuple[float, float]] = {
    "potassium": (1.0, 10.0),  # mmol/L: K < 1 or > 10 is impossible (7.2)
    "calcium_total": (0.5, 6.0),  # mmol/L: Ca < 0.5 or > 6 is impossible (7.2)
    "calcium_ionized": (0.5, 6.0),  # mmol/L: same bounds for ionised calcium
}


def outside(key: str, value: float) -> tuple[float, float] | None:
    """The bounds ``value`` violates, or ``None`` when it is possible (or the key has none)."""
    bounds = BOUNDS.get(key)
    if bounds is None:
        return None
    low, high = bounds
    return None if low <= value <= high else bounds


__all__ = ["BOUNDS", "outside"]
