"""The real service started with --clients and --tokens: every protected endpoint over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from cryptography.hazmat.primitives.asymmetric import ec

from .auth_helpers import ISS, STATIC_TOKEN, claims, public_jwk, token
from .cds_helpers import vignette_request
from .service_harness import running_service


def test_cds_call_feedback_and_evaluate_need_their_credentials(tmp_path: Path) -> None:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "k1")]}}]}))
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(STATIC_TOKEN + "\n")
    body = vignette_request("V01-ces-positive")
    with running_service(tmp_path, "--clients", str(clients), "--tokens", str(tokens), "--now",
                         "2025-03-10T12:00:00Z") as service:  # fmt: skip
        url = f"{service.url}/cds-services/redflags-patient-view"
        assert requests.get(f"{service.url}/cds-services", timeout=10).status_code == 200  # open

        def bearer(value: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {value}"}

        assert requests.post(url, json=body, timeout=10).status_code == 401
        jwt_ = token(ec_key, "ES384", "k1", claims(aud=url))
        answer = requests.post(url, json=body, headers=bearer(jwt_), timeout=30)
        assert answer.status_code == 200
        (card,) = answer.json()["cards"]
        assert card["indicator"] == "critical"
        assert requests.post(url, json=body, headers=bearer(jwt_), timeout=10).status_code == 401  # replay
        other_aud = token(ec_key, "ES384", "k1", claims(aud=f"{service.url}/fhir/$evaluate"))
        assert requests.post(url, json=body, headers=bearer(other_aud), timeout=10).status_code == 401
        assert requests.post(url, json=body, headers=bearer(STATIC_TOKEN), timeout=10).status_code == 401

        feedback_url = f"{url}/feedback"
        feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                                  "outcomeTimestamp": "2025-03-10T12:01:00Z"}]}  # fmt: skip
        assert requests.post(feedback_url, json=feedback, timeout=10).status_code == 401
        signed = token(ec_key, "ES384", "k1", claims(aud=feedback_url))
        assert (
            requests.post(feedback_url, json=feedback, headers=bearer(signed), timeout=10).status_code == 200
        )

        evaluate = f"{service.url}/fhir/$evaluate"
        bundle = Path("fixtures/vignettes/V01-ces-positive.json").read_bytes()
        fhir = {"Content-Type": "application/fhir+json"}
        assert requests.post(evaluate, data=bundle, headers=fhir, timeout=10).status_code == 401
        done = requests.post(evaluate, data=bundle, headers={**fhir, **bearer(STATIC_TOKEN)}, timeout=30)
        assert done.status_code == 200
        assert [e["resource"]["resourceType"] for e in done.json()["entry"]].count("Flag") == 1
    assert STATIC_TOKEN not in service.log() and jwt_ not in service.log()
