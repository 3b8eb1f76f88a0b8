"""The rule vocabulary the engine speaks: identity, tiers, recommended actions and codes.

It lives in the engine (the bottom layer) so that the engine never imports upward; rulesets
import it from here (``rulesets.meta`` re-exports it, so every ruleset keeps working).
Rule identity comes from here, never from durable-rules (which names rules by position).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Code:
    system: str
    code: str
    display: str


#: What an action asks for, in the engine's words; the output layer maps each to its own
#: representation of a request.
ACTION_KINDS: tuple[str, ...] = ("order", "medication", "task", "procedure")


@dataclass(frozen=True, slots=True)
class Action:
    """One recommended action of a plan (reference tables x.4)."""

    text: str
    codes: tuple[Code, ...]
    kind: str  # one of ACTION_KINDS
    due_hours: float  # the plan's target: now + due_hours
    tiers: tuple[str, ...] = ()  # empty: every tier

    def __post_init__(self) -> None:
        if self.kind not in ACTION_KINDS:
            raise ValueError(f"action {self.text!r}: kind {self.kind!r} is not one of {ACTION_KINDS}")


@dataclass(frozen=True, slots=True)
class Tier:
    name: str  # "A", "B", "C"
    severity: str  # "critical" | "urgent" | "routine"
    label: str  # short phrase shown in the alert's title and the card summary


@dataclass(frozen=True, slots=True)
class RuleMeta:
    id: str
    version: str
    title: str
    tiers: tuple[Tier, ...]
    source_label: str
    source_url: str
    disorder: Code  # what the alert suggests: the reason of its recommended actions
    actions: tuple[Action, ...]
    #: (other rule id, its tier, our tier): a match of the other rule at that tier removes ours.
    suppressed_by: tuple[tuple[str, str, str], ...] = field(default=())

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(f"{self.id} has no tier {name!r}")

    def actions_for(self, tier: str) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if not a.tiers or tier in a.tiers)
