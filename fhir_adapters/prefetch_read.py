"""CDS Hooks prefetch values read as FHIR: resources, searchset Bundles (and their pages),
OperationOutcomes, and the draft orders of ``order-sign``.

Which keys to read and where from is the service's flow; the JSON is read here. A value that
is not what its template asks for is an ``InvalidPrefetch`` (the service answers 400).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

from fhir_adapters.errors import InputError, shown

__all__ = [
    "Found",
    "InvalidPrefetch",
    "draft_orders",
    "entries",
    "is_bundle",
    "is_resource",
    "next_link",
    "read_value",
    "unique",
    "value_kind",
]

#: (path for messages, resource, fullUrl): what ``fhir_adapters.intake.group`` reads.
Found = tuple[str, dict[str, Any], str | None]


class InvalidPrefetch(InputError):
    """A prefetch value (or hook context) that is not the FHIR its template asks for."""


def is_resource(value: object) -> bool:
    """A JSON object naming its resource type."""
    return isinstance(value, dict) and isinstance(value.get("resourceType"), str)


def value_kind(value: dict[str, Any]) -> Literal["outcome", "bundle", "resource"]:
    """What a prefetched resource is: the client's failed fetch, a Bundle, or one resource."""
    rtype = value["resourceType"]
    return "outcome" if rtype == "OperationOutcome" else "bundle" if rtype == "Bundle" else "resource"


def is_bundle(value: object) -> bool:
    return isinstance(value, dict) and value.get("resourceType") == "Bundle"


def entries(bundle: dict[str, Any], where: str) -> Iterator[Found]:
    """The resources of a Bundle (its search outcomes and OperationOutcomes left out)."""
    items = bundle.get("entry", [])
    if not isinstance(items, list):
        raise InvalidPrefetch(f"{where}.entry must be an array")
    for i, entry in enumerate(items):
        if not isinstance(entry, dict):
            raise InvalidPrefetch(f"{where}.entry[{i}] must be an object")
        resource = entry.get("resource")
        search = entry.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue  # the server's warnings about the search, not data
        if not isinstance(resource, dict) or resource.get("resourceType") == "OperationOutcome":
            continue
        url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        yield f"{where}.entry[{i}].resource", resource, url


def read_value(key: str, resource: dict[str, Any], expected: str) -> dict[str, Any]:
    """A prefetched read must be the resource its template names (``Patient/123``)."""
    rtype, rid = expected.split("/", 1)
    if resource.get("resourceType") != rtype:
        raise InvalidPrefetch(f"prefetch.{key} must be a {rtype} (template {rtype}/...)")
    if "id" not in resource:  # the key says which resource it is (the spec's examples omit ids)
        return {**resource, "id": rid}
    if resource["id"] != rid:
        sent = resource["id"]
        sent_id = sent[:64] if isinstance(sent, str) else shown(sent)  # never a whole (deep) value
        raise InvalidPrefetch(f"prefetch.{key} is {rtype}/{sent_id}, not the one in context")
    return resource


def unique(found: list[Found]) -> list[Found]:
    """One copy of each ``Type/id`` (a resource can come under two keys or two pages)."""
    seen: set[str] = set()
    out: list[Found] = []
    for item in found:
        resource = item[1]
        rid, rtype = resource.get("id"), resource.get("resourceType")
        if isinstance(rid, str) and isinstance(rtype, str):  # else intake.group reports it
            ref = f"{rtype}/{rid}"
            if ref in seen:
                continue
            seen.add(ref)
        out.append(item)
    return out


def next_link(bundle: dict[str, Any]) -> str | None:
    """The URL of a Bundle's ``next`` link, or None."""
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            url: str = link["url"]
            return url
    return None


def draft_orders(draft: dict[str, Any], patient_id: str, now: int) -> list[Found]:
    """``context.draftOrders``: its MedicationRequests as signed at ``now`` (status active) and
    the Medications they may name; other orders carry no facts the rules read."""
    found: list[Found] = []
    items = draft.get("entry") or []
    if not isinstance(items, list):
        raise InvalidPrefetch("context.draftOrders.entry must be an array")
    for i, entry in enumerate(items):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Medication":
            url = entry.get("fullUrl") if isinstance(entry, dict) else None  # medicationReference
            found.append(
                (f"context.draftOrders.entry[{i}].resource", resource, url if isinstance(url, str) else None)
            )
            continue
        if not isinstance(resource, dict) or resource.get("resourceType") != "MedicationRequest":
            continue  # other orders (ServiceRequest, NutritionOrder, ...) carry no facts the rules read
        signed = {
            **resource,
            "status": "active" if resource.get("status") == "draft" else resource.get("status"),
            "authoredOn": resource.get("authoredOn") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "subject": resource.get("subject") or {"reference": f"Patient/{patient_id}"},
        }
        found.append((f"context.draftOrders.entry[{i}].resource", signed, None))
    return found
