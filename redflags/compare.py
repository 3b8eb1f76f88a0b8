"""One input under two configurations: which patients' alerts differ, rule by rule.

A site choosing a threshold wants to see what the change does to its own records before it
serves it. Both configurations are compiled in the same process (each its own durable ruleset,
docs/engine.md#several-configurations-in-one-process) and every file is evaluated under both,
on its own (as ``replay --expect`` does), at the same ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.alert import Alert
from redflags.pipeline import PatientResult, Pipeline
from redflags.replay.per_file import replay

#: What a comparison tells apart of an alert: its tier and severity (evidence and text may
#: differ with a threshold and are not a difference in what the clinician is shown).
Outcome = tuple[str, str] | None  # (tier, severity); None: the rule did not alert


@dataclass(frozen=True, slots=True)
class Difference:
    source: str
    patient: str
    rule: str
    baseline: Outcome
    other: Outcome

    def as_dict(self) -> dict[str, object]:
        def side(outcome: Outcome) -> dict[str, str] | None:
            return {"tier": outcome[0], "severity": outcome[1]} if outcome else None

        return {
            "source": self.source,
            "patient": self.patient,
            "rule": self.rule,
            "baseline": side(self.baseline),
            "other": side(self.other),
        }

    def line(self) -> str:
        def text(outcome: Outcome) -> str:
            return f"{outcome[1]} (tier {outcome[0]})" if outcome else "no alert"

        return f"{self.source}\t{self.patient}\t{self.rule}\t{text(self.baseline)} -> {text(self.other)}"


@dataclass(slots=True)
class Tally:
    """What was compared, for the closing line and the exit status."""

    inputs: int = 0
    patients: int = 0
    differing: int = 0  # patients with at least one difference
    errors: list[str] = field(default_factory=list)  # inputs that could not be read


def _outcomes(alerts: Iterable[Alert]) -> dict[str, Outcome]:
    return {a.rule: (a.tier, a.severity) for a in alerts}


def patient_differences(source: str, a: PatientResult | None, b: PatientResult | None) -> list[Difference]:
    """Rule by rule, where the two evaluations of one patient disagree (sorted by rule)."""
    pid = (a or b).pid if (a or b) else ""
    left = _outcomes(a.alerts if a else ())
    right = _outcomes(b.alerts if b else ())
    return [
        Difference(source, pid, rule, left.get(rule), right.get(rule))
        for rule in sorted({*left, *right})
        if left.get(rule) != right.get(rule)
    ]


def compare(
    files: Iterable[Path], baseline: Pipeline, other: Pipeline, now: int, tally: Tally
) -> Iterator[Difference]:
    """Every difference, file by file in order, patients in input order."""
    files = list(files)
    for a, b in zip(replay(files, baseline, now), replay(files, other, now), strict=True):
        tally.inputs += 1
        if a.error or b.error:
            tally.errors.append(f"{a.source}: {a.error or b.error}")
            continue
        ours, theirs = {r.pid: r for r in a.patients}, {r.pid: r for r in b.patients}
        for pid in [*ours, *(pid for pid in theirs if pid not in ours)]:
            tally.patients += 1
            found = patient_differences(a.source, ours.get(pid), theirs.get(pid))
            tally.differing += bool(found)
            yield from found
