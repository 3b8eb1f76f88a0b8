"""The Flag and CarePlan a CDS card's suggestion creates, made meaningful outside a transaction.

They are the ones the replay writes (``fhir_adapters.output``) with two references changed: the
author is the engine Device by identifier (the client has no Device entry to resolve a
``urn:uuid``), and the CarePlan points at the Flag by the id it carries in the same suggestion
(the client processes a suggestion's actions as one transaction with ``fhirServer`` as base, so
``Flag/<id>`` is rewritten to the new id).

Rendered once per call: when the call has already rendered the alert's pair (a service with a
state store renders the Flag and CarePlan it delivers when an alert is raised or updated), the
card's pair is that pair re-keyed, not a second render. Re-keyed means the card's own identity
(the episode identifier in the caller's tenant scope, ``period.start``/``created`` at the alert's time,
local ids, the author): the card is exactly what a fresh render would give
(``tests/test_fhirout_render_once.py`` proves both).
"""

from __future__ import annotations

from typing import Any

from engine.alert import Alert
from engine.vocabulary import RuleMeta
from fhir_adapters.output import (
    CAREPLAN_EPISODE_SYSTEM,
    ENGINE_DEVICE,
    FLAG_EPISODE_SYSTEM,
    careplan_for,
    episode_identifier,
    fhir_instant,
    flag_for,
)

__all__ = ["ENGINE_AUTHOR", "Pair", "flag_text", "resources_for"]

#: A Flag and its CarePlan.
Pair = tuple[dict[str, Any], dict[str, Any]]

#: The engine Device named by identifier: what a card's resources give as author.
ENGINE_AUTHOR: dict[str, Any] = {
    "identifier": dict(ENGINE_DEVICE["identifier"][0]),
    "display": ENGINE_DEVICE["deviceName"][0]["name"],
}


def resources_for(
    alert: Alert,
    meta: RuleMeta,
    *,
    flag_elsewhere: bool = False,
    rendered: Pair | None = None,
    scope: str = "",
) -> Pair:
    """The Flag and the proposed CarePlan of one alert, as a suggestion creates them.

    ``flag_elsewhere``: the Flag is created by a systemAction, not in the CarePlan's suggestion,
    so the CarePlan names it by its episode identifier instead of a local id. ``rendered``: the
    pair this call already rendered for the alert (``fhir_adapters.output.alert_resources``):
    re-keyed instead of rendered again. ``scope``: the tenant's (``episode_identifier``), so the
    Flag a card creates is the one the service's outbox updates and withdraws, and two tenants'
    cards for one patient id never name one Flag on a FHIR server both write to.
    """
    local_id = episode_identifier(alert, scope)
    flag_ref = f"Flag/{local_id}"
    base_flag, base_plan = rendered if rendered is not None else _render(alert, meta, flag_ref)
    since = fhir_instant(alert.now)
    flag = {
        **base_flag,
        "identifier": [{"system": FLAG_EPISODE_SYSTEM, "value": local_id}],
        "period": {"start": since},
        "id": local_id,
        "author": ENGINE_AUTHOR,
    }
    careplan = {
        **base_plan,
        "identifier": [{"system": CAREPLAN_EPISODE_SYSTEM, "value": local_id}],
        "created": since,
        "supportingInfo": [{"reference": flag_ref}, *base_plan["supportingInfo"][1:]],
        "id": local_id,
        "author": ENGINE_AUTHOR,
    }
    if flag_elsewhere:
        by_identifier = {"identifier": flag["identifier"][0], "display": flag["code"]["text"]}
        careplan["supportingInfo"] = [
            by_identifier if ref.get("reference") == f"Flag/{local_id}" else ref
            for ref in careplan["supportingInfo"]
        ]
    return _fhir_order(flag), _fhir_order(careplan)


def _render(alert: Alert, meta: RuleMeta, flag_ref: str) -> Pair:
    return flag_for(alert, meta), careplan_for(alert, meta, flag_ref)


def flag_text(flag: dict[str, Any]) -> str:
    """What a Flag says (``code.text``): the card action's description."""
    text: str = flag["code"]["text"]
    return text


def _fhir_order(resource: dict[str, Any]) -> dict[str, Any]:
    """resourceType and id first, as FHIR JSON is usually written."""
    head = {"resourceType": resource["resourceType"], "id": resource["id"]}
    return {**head, **{k: v for k, v in resource.items() if k not in head}}
