"""Two tenants (here two sites of one caller) sharing a FHIR server, attacked over real HTTP.

The alert ledger and the outbox scope their Flag and CarePlan identifiers by tenant, but the
Flag a CDS card's suggestion creates did not: site A's and site B's cards for one patient named
one Flag (so a card from one site updated or was withdrawn with the other's), and the card's
Flag was never the one the service's own outbox later updates and withdraws. Card uuids came
from the hookInstance alone, so two callers sending one hookInstance shared a card (the second
caller's card was never recorded, its feedback counted as on an unknown card). And a client's
``iss`` could spell another caller's tenant (``token:NAME``, ``default``, ``...|origin``).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from fhir_adapters.output import FLAG_EPISODE_SYSTEM
from redflags.service.auth.trusted_clients import ClientsError, TrustedClients
from redflags.state.stores import open_feedback, open_state

from .auth_helpers import public_jwk
from .cds_helpers import PATIENT_VIEW, prefetch_for, request, resources_of
from .conftest import FIXTURES
from .service_harness import Service, free_port, running_service

NOW = "2025-03-10T12:00:00Z"
#: Post-void residual 420 mL: cauda equina, critical under the default thresholds.
PVR = FIXTURES / "cauda_equina_syndrome" / "tierA-pvr-420mL-leg-numbness.json"


def _card(service: Service, site: str, hook_instance: str) -> dict[str, Any]:
    resources = resources_of(PVR)
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    body = {**request("patient-view", patient["id"], prefetch_for(resources)), "hookInstance": hook_instance}
    answer = requests.post(f"{service.url}/sites/{site}/cds-services/{PATIENT_VIEW}", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (card,) = answer.json()["cards"]
    return card


def _flag_identifier(resource: dict[str, Any]) -> str:
    (value,) = [i["value"] for i in resource["identifier"] if i["system"] == FLAG_EPISODE_SYSTEM]
    return value


def test_each_site_s_card_names_the_flag_its_own_outbox_delivers(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text("# every default\n", encoding="utf-8")
    state, feedback = tmp_path / "state.sqlite", tmp_path / "feedback.sqlite"
    nowhere = f"http://127.0.0.1:{free_port()}"  # the outbox keeps its items pending
    args = ["--allow-unauthenticated", "--now", NOW, "--state", str(state), "--feedback-db", str(feedback)]
    args += ["--fhir-server", nowhere]
    args += [arg for site in ("a", "b") for arg in ("--site", f"{site}={tmp_path / site}.toml")]
    instance = str(uuid.uuid4())  # one hookInstance sent to both sites
    with running_service(tmp_path, *args) as service:
        cards = {site: _card(service, site, instance) for site in ("a", "b")}
    flags = {site: card["suggestions"][0]["actions"][0]["resource"] for site, card in cards.items()}
    assert _flag_identifier(flags["a"]) != _flag_identifier(flags["b"])
    assert flags["a"]["id"] != flags["b"]["id"]

    delivered = {}
    for item in open_state(state).deliveries():
        site = item.tenant.rsplit("site:", 1)[1]
        for entry in item.bundle["entry"]:
            if entry["resource"]["resourceType"] == "Flag":
                delivered[site] = _flag_identifier(entry["resource"])
    assert delivered == {site: _flag_identifier(flag) for site, flag in flags.items()}

    assert cards["a"]["uuid"] != cards["b"]["uuid"]  # each site's card recorded for its feedback
    shown = open_feedback(feedback, create=False).report()
    rows = sorted((rule.site, rule.rule, rule.shown) for rule in shown.rules)  # one row per site
    assert rows == [("a", "cauda_equina_syndrome", 1), ("b", "cauda_equina_syndrome", 1)]


@pytest.mark.parametrize(
    ("iss", "clash"),
    [
        ("token:lab", "the static token named lab"),
        ("default", "the default tenant (the CLI's, --allow-unauthenticated)"),
        ("https://ehr.example|https://fhir.example", "a CDS tenant of iss https://ehr.example"),
        ("https://ehr.example site:a", "site a's records of iss https://ehr.example"),
    ],
)
def test_an_iss_that_spells_another_tenant_is_refused(iss: str, clash: str) -> None:
    """A client's iss is its tenant: one spelling another caller's tenant (``clash``) would share
    its records (``serve`` makes the ClientsError one line and exit 1, as every clients-file error)."""
    key = ec.generate_private_key(ec.SECP384R1())
    data = {"clients": [{"iss": iss, "jwks": {"keys": [public_jwk(key, "k")]}}]}
    with pytest.raises(ClientsError, match=r"^clients\[0\]: iss "):
        TrustedClients.from_data(data)
