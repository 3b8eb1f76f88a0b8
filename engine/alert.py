"""What an evaluation produces: alerts with their evidence, in no record format."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.vocabulary import Code

#: Urgency levels, most urgent first; also the order used to pick "the highest tier".
SEVERITIES: tuple[str, ...] = ("critical", "urgent", "routine")


def severity_rank(severity: str) -> int:
    """Lower is more urgent; unknown severities sort last."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True, slots=True)
class Criterion:
    """One matched criterion: a human phrase plus the resources behind it."""

    text: str
    refs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Alert:
    """A fired rule for one patient at one evaluation time.

    ``evidence`` lists every record reference that satisfied a criterion, in first-seen order.
    """

    patient: str
    rule: str
    version: str
    tier: str
    severity: str
    title: str
    rationale: str
    criteria: tuple[Criterion, ...]
    evidence: tuple[str, ...]
    now: int
    #: UTC date (YYYY-MM-DD) of the earliest evidence: with patient and rule it names the episode,
    #: so re-evaluating the same story yields the same alert identifier.
    episode: str = ""
    suspected: bool = False
    preliminary: bool = False
    notes: tuple[str, ...] = field(default=())
    #: the disorder this alert suggests (the branch's own, else the rule's: the plan's reason)
    disorder: Code | None = None

    def summary(self) -> dict[str, object]:
        """The replay JSON shape of one alert."""
        return {
            "rule": self.rule,
            "version": self.version,
            "severity": self.severity,
            "rationale": self.rationale,
            "evidence": list(self.evidence),
        }
