"""The Flag and CarePlan a CDS card's suggestion creates, made meaningful outside a transaction.

They are the ones the replay writes (``fhir_adapters.output``) with two references changed: the
author is the engine Device by identifier (the client has no Device entry to resolve a
``urn:uuid``), and the CarePlan points at the Flag by the id it carries in the same suggestion
(the client processes a suggestion's actions as one transaction with ``fhirServer`` as base, so
``Flag/<id>`` is rewritten to the new id). Each is rendered once per alert; the card's
suggestion and systemAction carry these very objects.
"""

from __future__ import annotations

from typing import Any

from engine.alert import Alert
from engine.vocabulary import RuleMeta
from fhir_adapters.output import ENGINE_DEVICE, careplan_for, episode_identifier, flag_for

__all__ = ["ENGINE_AUTHOR", "flag_text", "resources_for"]

#: The engine Device named by identifier: what a card's resources give as author.
ENGINE_AUTHOR: dict[str, Any] = {
    "identifier": dict(ENGINE_DEVICE["identifier"][0]),
    "display": ENGINE_DEVICE["deviceName"][0]["name"],
}


def resources_for(
    alert: Alert, meta: RuleMeta, *, flag_elsewhere: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Flag and the proposed CarePlan of one alert, as a suggestion creates them.

    ``flag_elsewhere``: the Flag is created by a systemAction, not in the CarePlan's suggestion,
    so the CarePlan names it by its episode identifier instead of a local id.
    """
    local_id = episode_identifier(alert)
    flag = {**flag_for(alert, meta), "id": local_id, "author": ENGINE_AUTHOR}
    careplan = {**careplan_for(alert, meta, f"Flag/{local_id}"), "id": local_id, "author": ENGINE_AUTHOR}
    if flag_elsewhere:
        by_identifier = {"identifier": flag["identifier"][0], "display": flag["code"]["text"]}
        careplan["supportingInfo"] = [
            by_identifier if ref.get("reference") == f"Flag/{local_id}" else ref
            for ref in careplan["supportingInfo"]
        ]
    return _fhir_order(flag), _fhir_order(careplan)


def flag_text(flag: dict[str, Any]) -> str:
    """What a Flag says (``code.text``): the card action's description."""
    text: str = flag["code"]["text"]
    return text


def _fhir_order(resource: dict[str, Any]) -> dict[str, Any]:
    """resourceType and id first, as FHIR JSON is usually written."""
    head = {"resourceType": resource["resourceType"], "id": resource["id"]}
    return {**head, **{k: v for k, v in resource.items() if k not in head}}
