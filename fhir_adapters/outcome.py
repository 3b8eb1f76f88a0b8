"""OperationOutcome answers: the one shape every refusal of the HTTP endpoints takes.

The HTTP layer decides status and media type and sends this body; the FHIR shape is built here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["outcome"]


def outcome(
    diagnostics: str, code: str = "invalid", severity: str = "error", expression: Iterable[str] = ()
) -> dict[str, Any]:
    """One issue; ``expression``: the element paths at fault (left out when there are none)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    paths = list(expression)
    if paths:
        issue["expression"] = paths
    return {"resourceType": "OperationOutcome", "issue": [issue]}
