"""The ``$evaluate`` answer: a collection Bundle of the alerts' resources and an OperationOutcome.

For each alert the Flag and proposed CarePlan that ``redflags replay --out`` writes (same
identifiers and ``urn:uuid`` fullUrls), the engine Device they name (once), and last an
OperationOutcome saying what was evaluated and every entry that was skipped or invalid.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from engine.alert import Alert
from engine.vocabulary import RuleMeta
from fhir_adapters.evaluate_input import EvaluationInput
from fhir_adapters.intake import Issue
from fhir_adapters.output import fhir_instant, patient_transaction

__all__ = ["MAX_UNREAD_PATHS", "WHAT_IF", "Evaluated", "answer", "operation_outcome"]

#: Element paths listed per "not read" resource type (the count is in the text).
MAX_UNREAD_PATHS = 5
#: Said when the caller chose the instant: nothing it sent is kept.
WHAT_IF = "evaluated at the requested time, not the service's: a what-if; nothing was stored or changed"


class Evaluated(Protocol):
    """One patient's evaluation, as far as the answer needs it."""

    @property
    def alerts(self) -> Sequence[Alert]: ...

    @property
    def issues(self) -> Sequence[Issue]: ...


def answer(
    given: EvaluationInput,
    results: Sequence[Evaluated],
    metas: Mapping[str, RuleMeta],
    *,
    what_if: bool = False,
) -> dict[str, Any]:
    """The collection Bundle: engine Device, Flag + CarePlan per alert, then the OperationOutcome."""
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for result in results:
        transaction = patient_transaction(list(result.alerts), metas)  # validated; None without alerts
        for entry in transaction["entry"] if transaction else ():
            if entry["fullUrl"] not in seen:  # the engine Device appears once
                seen.add(entry["fullUrl"])
                entries.append({"fullUrl": entry["fullUrl"], "resource": entry["resource"]})
    report = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": operation_outcome(given, results, what_if)}
    return {"resourceType": "Bundle", "type": "collection", "entry": [*entries, report]}


def operation_outcome(
    given: EvaluationInput, results: Sequence[Evaluated], what_if: bool = False
) -> dict[str, Any]:
    """What was evaluated, then each entry skipped or invalid (and resource types not read)."""
    issues = [_issue(i) for i in given.intake.issues]
    issues += [_issue(i) for result in results for i in result.issues]
    for rtype, paths in given.unread.items():
        count = len(paths)
        issues.append(
            {
                "severity": "information",
                "code": "informational",
                "diagnostics": f"{_count(count, rtype + ' entry', rtype + ' entries')} not read: "
                "no rule uses this resource type",
                "expression": paths[:MAX_UNREAD_PATHS],
            }
        )
    alerts = sum(len(r.alerts) for r in results)
    summary = (
        f"evaluated {_count(len(results), 'patient')} ({_count(given.entries, 'resource')}) "
        f"at {fhir_instant(given.now)}: {_count(alerts, 'alert')}; "
        + (f"{_count(len(issues), 'issue')} listed below" if issues else "nothing skipped")
    )
    head = [{"severity": "information", "code": "informational", "diagnostics": summary}]
    if not results:
        head.append(
            {
                "severity": "warning",
                "code": "not-found",
                "diagnostics": "no patient found: no Patient, and no resource naming one in subject/patient",
            }
        )
    last = [{"severity": "information", "code": "informational", "diagnostics": WHAT_IF}] if what_if else []
    return {"resourceType": "OperationOutcome", "issue": head + issues + last}


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _issue(issue: Issue) -> dict[str, Any]:
    return {
        "severity": issue.severity,
        "code": issue.code,
        "diagnostics": issue.message,
        "expression": [issue.path],
    }
