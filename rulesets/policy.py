"""Clinical policy every rule shares, handed to the engine as data (docs/clinical-policy.md#building-blocks,
docs/clinical-policy.md#observation-status).

- ``TEMPO``: the onset tempo of a weakness finding, (above, up to) seconds since onset;
  ``tempo(cond, "acute")`` constrains a finding's earliest onset to one of them.
- ``PRELIMINARY_SUPPORTS``: the severities a preliminary result may support on its own; any
  other tier needs a final result. ``rulesets.common`` carries it, so every configuration of
  the engine (which always includes the shared building blocks) applies it.
"""

from __future__ import annotations

from dataclasses import replace

from engine.dsl import DAY, HOUR, WEEK, Cond

TEMPO: dict[str, tuple[float, float]] = {
    "hyperacute": (-1, 24 * HOUR),
    "acute": (24 * HOUR, 7 * DAY),
    "subacute": (7 * DAY, 8 * WEEK),
    "chronic": (8 * WEEK, float("inf")),
}

PRELIMINARY_SUPPORTS: frozenset[str] = frozenset({"critical"})


def tempo(cond: Cond, name: str) -> Cond:
    """``cond`` (a finding or derived fact) with the onset tempo ``name`` (a key of ``TEMPO``)."""
    above, up_to = TEMPO[name]
    begun = cond.begun(None if above < 0 else above, up_to)
    return replace(begun, phrase=f"{begun.phrase} ({name})")
