"""Calling ``POST /fhir/$evaluate`` over real HTTP and reading its answer, for the service tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import requests

from fhir_adapters.output import FLAG_PRIORITY_EXTENSION

from .service_harness import ROOT

FIXTURES = ROOT / "fixtures"
FHIR_JSON = "application/fhir+json"
#: Flag priority code per alert severity (docs/clinical-policy.md#urgency).
PRIORITY = {"critical": "PH", "urgent": "PM", "routine": "PL"}


def load(path: Path) -> dict[str, Any]:
    return orjson.loads(path.read_bytes())


def expectation(path: Path) -> dict[str, Any]:
    return load(path.with_name(path.name.removesuffix(".json") + ".expected.json"))


def post(
    session: requests.Session | None,
    url: str,
    body: dict | bytes,
    now: str | None = None,
    content_type: str = FHIR_JSON,
    **kwargs: Any,
) -> requests.Response:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return (session or requests).post(
        f"{url}/fhir/$evaluate",
        data=data,
        params={"now": now} if now else None,
        headers={"Content-Type": content_type, **kwargs.pop("headers", {})},
        timeout=kwargs.pop("timeout", 30),
        **kwargs,
    )


def parameters(*resources: tuple[str, dict], now: str | None = None) -> dict[str, Any]:
    """A Parameters body: (name, resource) pairs, then ``now`` as a valueDateTime."""
    params: list[dict[str, Any]] = [{"name": name, "resource": res} for name, res in resources]
    if now:
        params.append({"name": "now", "valueDateTime": now})
    return {"resourceType": "Parameters", "parameter": params}


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def outcome(bundle: dict[str, Any]) -> dict[str, Any]:
    """The OperationOutcome, which is always the last entry."""
    last = bundle["entry"][-1]["resource"]
    assert last["resourceType"] == "OperationOutcome"
    return last


def alerts(bundle: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Patient -> rule -> severity, read back from the Flags of an answer."""
    found: dict[str, dict[str, str]] = {}
    for flag in resources(bundle, "Flag"):
        (ext,) = (e for e in flag["extension"] if e["url"] == FLAG_PRIORITY_EXTENSION)
        priority = ext["valueCodeableConcept"]["coding"][0]["code"]
        severity = next(s for s, p in PRIORITY.items() if p == priority)
        found.setdefault(flag["subject"]["reference"], {})[flag["code"]["coding"][0]["code"]] = severity
    return found


def expected_alerts(expected: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        pid: {a["rule"]: a["severity"] for a in fired} for pid, fired in expected["patients"].items() if fired
    }


def with_patient_id(doc: Any, old: str, new: str) -> Any:
    """A copy of a fixture whose patient ``old`` is now ``new`` (id, references, fullUrls)."""
    doc = copy.deepcopy(doc)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("resourceType") == "Patient" and node.get("id") == old:
                node["id"] = new
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        if isinstance(node, str) and (node == f"Patient/{old}" or node.endswith(f"/Patient/{old}")):
            return node[: -len(old)] + new
        return node

    return rewrite(doc)
