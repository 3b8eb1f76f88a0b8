"""Validate FHIR resources with fhir.resources R4B, reporting OperationOutcome-style issues.

fhir.resources 8.3 has no R4 package; for the resources redflags reads and writes, the R4B models
equal R4 4.0.1 (docs/engine.md#fhir-validation). Two gaps are closed here: pydantic locations are
turned into FHIRPath-like expressions (``Bundle.entry[3].resource.status``) so a reader can find
the element, and the required code bindings fhir.resources ignores are checked for the elements
redflags writes (``validate_required_codes``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from fhir_adapters.errors import shown

if TYPE_CHECKING:  # fhir.resources is imported on first validation, not by every replay
    from fhir.resources.R4B.resource import Resource

__all__ = [
    "FhirValidationError",
    "Issue",
    "required_code_issues",
    "resource_issues",
    "validate",
    "validate_required_codes",
    "validate_resource",
]


class Issue(NamedTuple):
    """One OperationOutcome issue: ``code`` is an R4 issue-type code."""

    code: str
    expression: str
    message: str


class FhirValidationError(ValueError):
    """A resource failed validation; ``issues`` says where and why."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = list(issues)
        super().__init__(self._describe())

    def _describe(self) -> str:
        lines = [f"{i.expression} [{i.code}]: {i.message}" for i in self.issues]
        noun = "issue" if len(lines) == 1 else "issues"
        return f"{len(lines)} FHIR validation {noun}: " + "; ".join(lines)

    def operation_outcome(self) -> dict[str, Any]:
        """The issues as an R4 OperationOutcome, for HTTP answers and intake reports."""
        return {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": i.code,
                    "diagnostics": i.message,
                    "expression": [i.expression],
                }
                for i in self.issues
            ],
        }


# --- full model validation ------------------------------------------------------------------

#: pydantic adds non-element segments to some locations (the custom root of a resource union).
_NOT_ELEMENTS = frozenset({"root"})
_ELEMENT_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9_]*")  # fullmatch: no trailing newline
_VALUE_TYPES = frozenset(
    {"value_error", "json_invalid", "literal_error", "enum", "too_short", "too_long"}
    | {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
)
_VALUE_SUFFIXES = ("_type", "_parsing", "_pattern_mismatch", "_too_short", "_too_long")
_ABSTRACT_TYPES = frozenset({"Resource", "DomainResource"})


def _expression(path: str, loc: tuple[int | str, ...]) -> str:
    """``('entry', 1, 'resource', 'status')`` under ``Bundle`` -> ``Bundle.entry[1].resource.status``."""
    parts = [path]
    for segment in loc:
        if isinstance(segment, int):
            parts.append(f"[{segment}]")
        elif segment not in _NOT_ELEMENTS and _ELEMENT_NAME.fullmatch(segment):
            parts.append(f".{segment}")
    return "".join(parts)


def _issue_code(error_type: str) -> str:
    """Map a pydantic error type to an R4 issue-type code (docs/engine.md#fhir-validation)."""
    if error_type == "missing" or error_type.endswith(".missing"):
        return "required"
    if error_type == "extra_forbidden":
        return "structure"
    if error_type in _VALUE_TYPES or error_type.endswith(_VALUE_SUFFIXES):
        return "value"
    return "invalid"


def _message(error: Mapping[str, Any]) -> str:
    """pydantic's message, plus the offending scalar so the report is actionable."""
    if error["type"] == "json_invalid":
        return f"expected a JSON object, got {shown(error.get('input'))}"
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and error["type"] != "missing":
        return f"{error['msg']} (got {shown(value)})"
    return str(error["msg"])


@cache
def _model_for(resource_type: str) -> type[Resource] | None:
    """The R4B model class of a concrete resource type, or None if R4B has none."""
    from fhir.resources.R4B import get_fhir_model_class
    from fhir.resources.R4B.resource import Resource

    try:
        model = get_fhir_model_class(resource_type)
    except (KeyError, ValueError):
        return None
    if resource_type in _ABSTRACT_TYPES or not issubclass(model, Resource):
        return None  # a datatype such as CodeableConcept is not a resource
    return model


def _unsupported(root: Any, where: str) -> Iterator[Issue]:
    """Nested resources whose type R4B lacks or that is no string: R4B raises KeyError or
    TypeError for them, without a location. A loop, not recursion: JSON may nest 1,000 deep."""
    stack = [(root, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            kind = node.get("resourceType", "")
            if not isinstance(kind, str):
                yield Issue("structure", f"{path}.resourceType", "resourceType must be a string")
            elif kind and _model_for(kind) is None:
                yield Issue("not-supported", path, f"resource type {kind!r} is not supported (R4B)")
            stack.extend((value, f"{path}.{key}") for key, value in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((value, f"{path}[{index}]") for index, value in reversed(list(enumerate(node))))


def resource_issues(resource: Any, path: str | None = None) -> list[Issue]:
    """Every issue the R4B model finds in ``resource``; ``path`` prefixes each expression."""
    if not isinstance(resource, dict):
        return [Issue("structure", path or "Resource", "a resource must be a JSON object")]
    kind = resource.get("resourceType")
    where = path or (kind if isinstance(kind, str) and kind else "Resource")
    if not isinstance(kind, str) or not kind:
        return [Issue("required", f"{where}.resourceType", "resourceType is missing")]
    model = _model_for(kind)
    if model is None:
        return [Issue("not-supported", where, f"resource type {kind!r} is not supported (R4B)")]
    from pydantic import ValidationError

    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [
            Issue(_issue_code(e["type"]), _expression(where, e["loc"]), _message(e)) for e in exc.errors()
        ]
    except (KeyError, TypeError) as exc:  # a nested resource type R4B lacks (MedicinalProduct), or a list
        found = list(_unsupported(resource, where))
        return found or [Issue("not-supported", where, f"unsupported resource type: {exc}")]
    return []


def validate_resource(resource: dict[str, Any], path: str | None = None) -> None:
    """Raise ``FhirValidationError`` unless the R4B model of ``resource`` accepts it.

    ``path`` defaults to the resourceType; strict intake passes e.g. ``Bundle.entry[3].resource``.
    """
    issues = resource_issues(resource, path)
    if issues:
        raise FhirValidationError(issues)


# --- required bindings fhir.resources does not enforce --------------------------------------

FLAG_STATUS = frozenset({"active", "inactive", "entered-in-error"})
CAREPLAN_STATUS = frozenset(
    {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
)
CAREPLAN_INTENT = frozenset({"proposal", "plan", "order", "option"})
CAREPLAN_ACTIVITY_STATUS = frozenset(
    {
        "not-started", "scheduled", "in-progress", "on-hold", "completed",
        "cancelled", "stopped", "unknown", "entered-in-error",
    }
)  # fmt: skip
CAREPLAN_ACTIVITY_KIND = frozenset(
    {
        "Appointment", "CommunicationRequest", "DeviceRequest", "MedicationRequest",
        "NutritionOrder", "Task", "ServiceRequest", "VisionPrescription",
    }
)  # fmt: skip
PUBLICATION_STATUS = frozenset({"draft", "active", "retired", "unknown"})
CONCEPTMAP_EQUIVALENCE = frozenset(
    {
        "relatedto", "equivalent", "equal", "wider", "subsumes", "narrower",
        "specializes", "inexact", "unmatched", "disjoint",
    }
)  # fmt: skip
DEVICE_NAME_TYPE = frozenset(
    {
        "udi-label-name", "user-friendly-name", "patient-reported-name",
        "manufacturer-name", "model-name", "other",
    }
)  # fmt: skip
BUNDLE_TYPE = frozenset(
    {
        "document", "message", "transaction", "transaction-response", "batch",
        "batch-response", "history", "searchset", "collection",
    }
)  # fmt: skip
HTTP_VERB = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"})


@dataclass(frozen=True, slots=True)
class _Binding:
    """A coded element (dotted path from the resource) with its R4 required code list."""

    path: str
    codes: frozenset[str]
    mandatory: bool  # 1..1 wherever its parent exists


#: Only the elements redflags writes; incoming data is read with explicit checks elsewhere.
_BINDINGS: dict[str, tuple[_Binding, ...]] = {
    "Flag": (_Binding("status", FLAG_STATUS, True),),
    "CarePlan": (
        _Binding("status", CAREPLAN_STATUS, True),
        _Binding("intent", CAREPLAN_INTENT, True),
        _Binding("activity.detail.status", CAREPLAN_ACTIVITY_STATUS, True),
        _Binding("activity.detail.kind", CAREPLAN_ACTIVITY_KIND, False),
    ),
    "ConceptMap": (
        _Binding("status", PUBLICATION_STATUS, True),
        _Binding("group.element.target.equivalence", CONCEPTMAP_EQUIVALENCE, True),
    ),
    "Device": (_Binding("deviceName.type", DEVICE_NAME_TYPE, True),),
    "Bundle": (
        _Binding("type", BUNDLE_TYPE, True),
        _Binding("entry.request.method", HTTP_VERB, True),
    ),
}


def _parents(node: Any, steps: list[str], expr: str) -> Iterator[tuple[dict[str, Any], str]]:
    """The objects holding the last step of ``steps``, expanding lists as ``[i]``."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _parents(item, steps, f"{expr}[{index}]")
    elif isinstance(node, dict):
        if not steps:
            yield node, expr
        elif steps[0] in node:
            yield from _parents(node[steps[0]], steps[1:], f"{expr}.{steps[0]}")


def _binding_issues(resource: dict[str, Any], binding: _Binding, path: str) -> Iterator[Issue]:
    *steps, leaf = binding.path.split(".")
    for parent, expr in _parents(resource, steps, path):
        where = f"{expr}.{leaf}"
        if leaf not in parent:
            if binding.mandatory:
                yield Issue("required", where, f"{leaf} is required")
        elif not isinstance(parent[leaf], str) or parent[leaf] not in binding.codes:  # a list: unhashable
            allowed = "|".join(sorted(binding.codes))
            yield Issue("code-invalid", where, f"{shown(parent[leaf])} is not one of {allowed}")


def required_code_issues(resource: dict[str, Any], path: str | None = None) -> list[Issue]:
    """Required-binding violations in ``resource`` (and in the resources of a Bundle)."""
    if not isinstance(resource, dict):
        return []  # resource_issues reports the shape
    kind = resource.get("resourceType", "")
    if not isinstance(kind, str):
        return []  # resource_issues reports it
    where = path or kind
    issues = [
        issue for binding in _BINDINGS.get(kind, ()) for issue in _binding_issues(resource, binding, where)
    ]
    if kind == "Bundle":
        entries = resource.get("entry")
        for index, entry in enumerate(entries if isinstance(entries, list) else ()):
            inner = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(inner, dict):
                issues += required_code_issues(inner, f"{where}.entry[{index}].resource")
    return issues


def validate_required_codes(resource: dict[str, Any], path: str | None = None) -> None:
    """Raise ``FhirValidationError`` for codes outside the R4 required bindings we write.

    fhir.resources accepts ``Flag.status = "done"``; a FHIR server rejects it with 400.
    """
    issues = required_code_issues(resource, path)
    if issues:
        raise FhirValidationError(issues)


def validate(resource: dict[str, Any], path: str | None = None) -> None:
    """Both checks, all issues in one error: what redflags runs on everything it writes."""
    issues = resource_issues(resource, path)
    if isinstance(resource, dict) and resource.get("resourceType"):
        issues += required_code_issues(resource, path)
    if issues:
        raise FhirValidationError(_first_per_place(issues))


def _first_per_place(issues: list[Issue]) -> list[Issue]:
    """A missing status is reported by both checks: keep the first per (code, expression)."""
    first: dict[tuple[str, str], Issue] = {}
    for issue in issues:
        first.setdefault((issue.code, issue.expression), issue)
    return list(first.values())
