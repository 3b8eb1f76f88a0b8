"""What the replica tests send: the Guillain-Barré week as CDS calls with client JWTs.

Every replica has the same ``--public-url`` (the balancer's, ``PUBLIC``): a client signs for
the URL it calls, whichever replica then takes the call. Monday's record alone raises nothing;
Wednesday's areflexia on Monday's leg weakness raises Guillain-Barré (tier A) on Wednesday.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric import ec

from .auth_helpers import claims, token, write_clients
from .cds_helpers import PATIENT_VIEW, prefetch_for, request, resources_of
from .conftest import FIXTURES
from .evaluate_helpers import with_patient_id

NOW = "2025-03-12T12:00:00Z"  # Wednesday, the day of the second delivery
PUBLIC = "https://cds.example.org"
GBS = "guillain_barre_syndrome"
MONDAY = resources_of(FIXTURES / "history" / "gbs-monday.json")
(PATIENT,) = [r for r in MONDAY if r["resourceType"] == "Patient"]
WEDNESDAY = [PATIENT, *resources_of(FIXTURES / "history" / "gbs-wednesday.json")]
KEY = ec.generate_private_key(ec.SECP384R1())


def clients_file(tmp: Path) -> Path:
    """The trusted-clients file every replica reads (one EHR, its key)."""
    return write_clients(tmp / "clients.json", KEY)


def replica_args(tmp: Path, *more: str) -> tuple[str, ...]:
    """``serve`` arguments shared by every replica: JWT clients, the balancer's URL, a fixed now."""
    return ("--clients", str(clients_file(tmp)), "--public-url", PUBLIC, "--now", NOW, *more)


def jwt_for(path: str) -> str:
    """A fresh client JWT (new jti) for the endpoint ``path`` behind the balancer."""
    return token(KEY, "ES384", "ec-1", claims(aud=f"{PUBLIC}{path}"))


def week(patient_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Monday's and Wednesday's resources for a patient of that id (same clinical record)."""
    old = PATIENT["id"]
    return with_patient_id(MONDAY, old, patient_id), with_patient_id(WEDNESDAY, old, patient_id)


def cds_call(url: str, resources: list[dict[str, Any]], credential: str | None = None) -> requests.Response:
    """One patient-view call of the patient in ``resources`` (a fresh JWT unless given one)."""
    path = f"/cds-services/{PATIENT_VIEW}"
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    body = request("patient-view", patient["id"], prefetch_for(resources))
    headers = {"Authorization": f"Bearer {credential or jwt_for(path)}", "Content-Type": "application/json"}
    return requests.post(f"{url}{path}", data=json.dumps(body), headers=headers, timeout=90)


def cards(url: str, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = cds_call(url, resources)
    assert answer.status_code == 200, answer.text
    return answer.json()["cards"]


def feedback(url: str, card: str) -> requests.Response:
    """Accepted-feedback on ``card`` (CDS Hooks 2.0), with a fresh JWT."""
    path = f"/cds-services/{PATIENT_VIEW}/feedback"
    item = {
        "card": card,
        "outcome": "accepted",
        "outcomeTimestamp": "2025-03-12T12:05:00Z",
        "acceptedSuggestions": [{"id": "create-flag-and-careplan"}],
    }
    headers = {"Authorization": f"Bearer {jwt_for(path)}", "Content-Type": "application/json"}
    return requests.post(f"{url}{path}", data=json.dumps({"feedback": [item]}), headers=headers, timeout=30)
