"""Two tenants' ``Patient/1`` never share a Flag on a FHIR server both deliver to.

Updates and withdrawals are conditional on the Flag's episode identifier, so two tenants with
one identifier would change each other's Flag; the default tenant keeps the identifiers of 0.4
(stores and servers written before tenants stay consistent).
"""

from __future__ import annotations

from typing import Any

from fhir_adapters.output import episode_identifier
from redflags import lifecycle
from redflags.state.model import DEFAULT_TENANT
from tests.output_helpers import CES, NOW, make_alert


def _identifiers(bundle: dict[str, Any]) -> set[str]:
    return {
        ident["value"]
        for entry in bundle["entry"]
        if entry["resource"]["resourceType"] in {"Flag", "CarePlan"}
        for ident in entry["resource"]["identifier"]
    }


def _raised(tenant: str) -> lifecycle.Plan:
    return lifecycle.plan("Patient/v01", {}, [make_alert()], {CES.id: CES}, NOW, "test", tenant)


def test_two_tenants_raise_one_patient_ids_alert_under_different_identifiers() -> None:
    first, second = _raised("iss-a|https://ehr-a.example"), _raised("token:lab")
    ids_a, ids_b = (_identifiers(p.deliveries[0].bundle) for p in (first, second))
    assert ids_a and ids_b and not ids_a & ids_b
    # the update that follows keeps each tenant's own identifiers
    escalated = make_alert(tier="B", severity="urgent")
    update = lifecycle.plan(
        "Patient/v01",
        first.active,
        [escalated],
        {CES.id: CES},
        NOW + 60,
        "test",
        "iss-a|https://ehr-a.example",
    )
    assert update.transitions[0].change == "updated"
    assert _identifiers(update.deliveries[0].bundle) == ids_a


def test_the_default_tenant_keeps_the_identifiers_written_before_tenants() -> None:
    plan = _raised(DEFAULT_TENANT)
    assert _identifiers(plan.deliveries[0].bundle) == {episode_identifier(make_alert())}
