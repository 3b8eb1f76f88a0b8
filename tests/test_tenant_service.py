"""Issue 10, items 3 and 4, over real HTTP against ``redflags serve`` with a state store.

Item 4: two EHRs (two JWT issuers) sending the same patient id, and a static-token ``$evaluate``
caller, each see only what they sent themselves: on 30fb331 the second EHR's card was built on
the first EHR's Condition. Item 3: ``$evaluate?now=2100-01-01`` deleted every stored fact (the
history prune ran at the caller's instant) and withdrew an active alert; now an evaluation at
any instant but the service's clock is a what-if that stores and deletes nothing.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from redflags.service.evaluate.routes import WHAT_IF
from redflags.state.sqlite_store import SqliteStateStore

from .auth_helpers import claims, public_jwk, token
from .cds_helpers import PATIENT_VIEW, prefetch_for, request, resources_of
from .conftest import FIXTURES
from .evaluate_helpers import alerts, outcome, post
from .service_harness import ROOT, Service, running_service

NOW = "2025-03-12T12:00:00Z"  # the service's clock (serve --now): Wednesday, after both deliveries
PUBLIC = "https://cds.example.org"
ISS_A, ISS_B = "https://ehr-a.example.org/", "https://ehr-b.example.org/"
FHIR_SERVER = "https://fhir.example.org/r4"  # both EHRs name the same one: only iss tells them apart
LAB_TOKEN = "lab-" + "q" * 28
ANON_TOKEN = "anon-" + "w" * 27
MONDAY = resources_of(FIXTURES / "history" / "gbs-monday.json")
(PATIENT,) = [r for r in MONDAY if r["resourceType"] == "Patient"]
WEDNESDAY = [PATIENT, *resources_of(FIXTURES / "history" / "gbs-wednesday.json")]
V01 = json.loads((FIXTURES / "vignettes" / "V01-ces-positive.json").read_text())
GBS = "guillain_barre_syndrome"


def bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}


@dataclass
class Site:
    service: Service
    state: Path
    keys: dict[str, ec.EllipticCurvePrivateKey]

    def cards(self, iss: str, resources: list[dict[str, Any]], fhir_server: str | None = FHIR_SERVER) -> list:
        body = request("patient-view", PATIENT["id"], prefetch_for(resources))
        if fhir_server:
            body["fhirServer"] = fhir_server
        aud = f"{PUBLIC}/cds-services/{PATIENT_VIEW}"
        jwt_ = token(self.keys[iss], "ES384", "k1", claims(iss=iss, aud=aud, jti=str(uuid.uuid4())))
        answer = requests.post(
            f"{self.service.url}/cds-services/{PATIENT_VIEW}",
            json=body,
            headers={"Authorization": f"Bearer {jwt_}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["cards"]

    def evaluate(self, secret: str, body: dict[str, Any], now: str | None = None) -> dict[str, Any]:
        answer = post(None, self.service.url, body, now=now, headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def store(self) -> SqliteStateStore:
        return SqliteStateStore.open(self.state)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("tenants")
    keys = {iss: ec.generate_private_key(ec.SECP384R1()) for iss in (ISS_A, ISS_B)}
    clients = tmp / "clients.json"
    listed = [{"iss": iss, "jwks": {"keys": [public_jwk(key, "k1")]}} for iss, key in keys.items()]
    clients.write_text(json.dumps({"clients": listed}))
    tokens = tmp / "tokens.txt"
    tokens.write_text(f"lab-engine {LAB_TOKEN}\n{ANON_TOKEN}\n")
    state = tmp / "state.sqlite"
    args = ("--clients", str(clients), "--tokens", str(tokens), "--public-url", PUBLIC, "--now", NOW)
    with running_service(tmp, *args, "--state", str(state), "--workers", "2") as service:
        yield Site(service, state, keys)


def test_two_ehrs_with_one_patient_id_see_only_their_own_history(site: Site) -> None:
    assert site.cards(ISS_A, MONDAY) == []
    assert site.cards(ISS_B, WEDNESDAY) == []  # 30fb331: a GBS card built on EHR A's Monday
    (card,) = site.cards(ISS_A, WEDNESDAY)  # EHR A's own Monday and Wednesday
    assert "Guillain" in card["summary"]
    # the same client at another FHIR server is another record, and so is another store on the
    # same host (one host often serves several: .../fhirStores/A/fhir, /fhir/TENANT)
    assert site.cards(ISS_A, WEDNESDAY, fhir_server="https://other-fhir.example.org") == []
    assert site.cards(ISS_A, WEDNESDAY, fhir_server="https://fhir.example.org/r4-hospital-2") == []
    (again,) = site.cards(ISS_A, WEDNESDAY, fhir_server="https://FHIR.example.org:443/r4/")
    assert "Guillain" in again["summary"]  # one server however its base URL is spelled
    with site.store() as store:
        pid = f"Patient/{PATIENT['id']}"
        tenant_a, tenant_b = f"{ISS_A}|https://fhir.example.org/r4", f"{ISS_B}|https://fhir.example.org/r4"
        assert list(store.active(pid, tenant=tenant_a)) == [GBS]
        assert store.active(pid, tenant=tenant_b) == {}
        assert {"Condition/v03-leg-weakness"} <= set(store.facts_by_resource(pid, tenant=tenant_a))
        assert "Condition/v03-leg-weakness" not in store.facts_by_resource(pid, tenant=tenant_b)


def test_a_static_token_callers_condition_never_reaches_an_ehrs_card(site: Site) -> None:
    """The injection of the issue: the lab engine's Monday must not complete EHR B's Wednesday."""
    site.evaluate(LAB_TOKEN, bundle(MONDAY))  # at the service's clock: kept, for the lab engine
    assert site.cards(ISS_B, WEDNESDAY) == []
    answered = site.evaluate(LAB_TOKEN, bundle(WEDNESDAY))  # the lab engine's own history works
    assert alerts(answered) == {f"Patient/{PATIENT['id']}": {GBS: "critical"}}
    with site.store() as store:
        assert list(store.active(f"Patient/{PATIENT['id']}", tenant="token:lab-engine")) == [GBS]


def test_forget_in_one_tenant_leaves_the_others(site: Site) -> None:
    """``redflags history forget --tenant`` on the store the running service uses."""
    pid = f"Patient/{PATIENT['id']}"
    site.cards(ISS_B, MONDAY)
    with site.store() as store:
        before = store.tenants(pid)
    tenant_a = f"{ISS_A}|https://fhir.example.org/r4"
    forgot = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "history", "forget", pid, "--state", str(site.state),
         "--tenant", tenant_a, "--force"],  # its alerts are active: erased all the same
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert forgot.returncode == 0, forgot.stderr
    assert f"forgot {pid} in tenant {tenant_a}:" in forgot.stdout
    with site.store() as store:
        after = store.tenants(pid)
        assert tenant_a in before and tenant_a not in after
        assert {t: n for t, n in before.items() if t != tenant_a} == after
        assert store.facts_by_resource(pid, tenant=f"{ISS_B}|https://fhir.example.org/r4")


def everything(site: Site) -> tuple[list, list, list]:
    """Every fact, active alert and transition of every tenant (plain SQL: any schema version)."""
    with sqlite3.connect(f"file:{site.state}?mode=ro", uri=True) as db:
        facts = db.execute("SELECT patient, ref, ts, body FROM fact ORDER BY id").fetchall()
        active = db.execute("SELECT patient, rule, body FROM active_alert ORDER BY patient, rule").fetchall()
        changes = db.execute("SELECT patient, rule, change, at FROM transition ORDER BY id").fetchall()
    return facts, active, changes


def test_a_callers_now_never_prunes_history_nor_changes_an_alert(site: Site) -> None:
    """The attack of item 3: ``now=2100-01-01`` over HTTP deleted everything and withdrew an alert."""
    pid = f"Patient/{PATIENT['id']}"
    site.evaluate(ANON_TOKEN, bundle(MONDAY))
    assert alerts(site.evaluate(ANON_TOKEN, bundle(WEDNESDAY))) == {pid: {GBS: "critical"}}
    before = everything(site)
    assert len(before[0]) >= 9 and (pid, GBS) in {(p, rule) for p, rule, _ in before[1]}

    # another patient, far in the future: the prune ran at the caller's instant (every fact gone)
    future = site.evaluate(ANON_TOKEN, V01, now="2100-01-01T00:00:00Z")
    assert everything(site) == before
    assert outcome(future)["issue"][-1]["diagnostics"] == WHAT_IF  # and the caller is told
    # the same patient then: the alert was withdrawn, dated 2100
    same = site.evaluate(ANON_TOKEN, bundle(WEDNESDAY), now="2100-01-01T00:00:00Z")
    assert alerts(same) == {} and outcome(same)["issue"][-1]["diagnostics"] == WHAT_IF
    # and the past: a what-if too (no alert raised or withdrawn at an instant the caller picks)
    site.evaluate(ANON_TOKEN, bundle(WEDNESDAY), now="2025-03-01T00:00:00Z")
    assert everything(site) == before  # nothing stored, deleted or changed, V01 included

    # at the service's own clock the caller's data is kept as before
    at_clock = site.evaluate(ANON_TOKEN, V01, now=NOW)
    assert WHAT_IF not in json.dumps(outcome(at_clock))
    assert "Patient/v01" in {p for p, *_ in everything(site)[0]}
    with site.store() as store:
        assert store.facts_by_resource("Patient/v01", tenant="token:token-line-2")
