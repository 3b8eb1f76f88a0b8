"""examples/service/ as a newcomer uses it: the real service started with its files, tokens
minted by the real ``redflags token`` command, the example requests sent over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from .service_harness import Service
from .try_helpers import (
    EXAMPLES,
    ISS,
    KEY,
    PATIENT_VIEW,
    mint,
    redflags,
    service,
    static_token,
)

__all__ = ["service"]  # the fixture, shared with test_service_try_docs


def post(url: str, body: bytes, credential: str | None, media: str = "application/json") -> requests.Response:
    headers = {"Content-Type": media}
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    return requests.post(url, data=body, headers=headers, timeout=60)


def flags(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["code"]["text"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Flag"]


def test_the_patient_view_example_gets_its_card_with_a_token_from_redflags_token(service: Service) -> None:
    url = f"{service.url}/cds-services/{PATIENT_VIEW}"
    answer = post(url, (EXAMPLES / "patient-view.json").read_bytes(), mint(url))
    assert answer.status_code == 200, answer.text
    (card,) = answer.json()["cards"]
    assert card["indicator"] == "critical" and card["summary"].startswith("Cauda equina syndrome")


def test_the_evaluate_example_gets_its_flag_with_a_jwt_or_the_static_token(service: Service) -> None:
    url = f"{service.url}/fhir/$evaluate"
    body = (EXAMPLES / "evaluate.json").read_bytes()
    for credential in (mint(url), static_token()):
        answer = post(url, body, credential, "application/fhir+json")
        assert answer.status_code == 200, answer.text
        (flag,) = flags(answer.json())
        assert flag.startswith("Guillain-Barr")


def test_discovery_needs_no_token(service: Service) -> None:
    services = requests.get(f"{service.url}/cds-services", timeout=10).json()["services"]
    assert PATIENT_VIEW in [s["id"] for s in services]


def test_a_token_is_used_once_and_only_for_its_url(service: Service) -> None:
    url = f"{service.url}/cds-services/{PATIENT_VIEW}"
    body = (EXAMPLES / "patient-view.json").read_bytes()
    once = mint(url)
    assert post(url, body, once).status_code == 200
    assert post(url, body, once).status_code == 401
    assert post(url, body, mint(f"{service.url}/fhir/$evaluate")).status_code == 401


def test_redflags_token_signs_every_claim_the_service_requires() -> None:
    aud = "http://127.0.0.1:8080/cds-services/redflags-patient-view"
    first, second = mint(aud), mint(aud, "--lifetime", "60", "--kid", "other-kid")
    (key,) = json.loads((EXAMPLES / "clients.json").read_text())["clients"][0]["jwks"]["keys"]
    header = jwt.get_unverified_header(first)
    assert header == {"alg": "ES384", "kid": key["kid"], "typ": "JWT"}
    claims = jwt.decode(first, jwt.PyJWK(key).key, algorithms=["ES384"], audience=aud)
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti"}
    assert claims["iss"] == claims["sub"] == ISS and claims["aud"] == aud
    assert claims["exp"] - claims["iat"] == 300
    later = jwt.decode(second, options={"verify_signature": False})
    assert later["exp"] - later["iat"] == 60 and later["jti"] != claims["jti"]
    assert jwt.get_unverified_header(second)["kid"] == "other-kid"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--key", "missing.pem"), "--key missing.pem: cannot read"),
        (("--key", "examples/service/clients.json"), "not an unencrypted PEM private key"),
        (("--key", str(KEY), "--aud", "not a url"), "--aud 'not a url'"),
        (("--key", str(KEY), "--iss", " "), "--iss is empty"),
    ],
)
def test_redflags_token_refuses_bad_input_with_one_line(args: tuple[str, ...], says: str) -> None:
    options = dict(zip(args[::2], args[1::2], strict=True))
    full = {"--key": str(KEY), "--iss": ISS, "--aud": "http://127.0.0.1:8080/cds-services/x", **options}
    done = redflags("token", *[part for item in full.items() for part in item])
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr


def test_a_weak_or_wrong_key_type_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p256 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "p256.pem").write_bytes(p256)
    done = redflags(
        "token", "--key", str(tmp_path / "p256.pem"), "--iss", ISS, "--aud", "http://127.0.0.1:1/x"
    )
    assert done.returncode == 2 and "EC P-384 (ES384) or RSA" in done.stderr


def test_the_examples_are_marked_demo_and_hold_no_patient_identifiers() -> None:
    assert "NOT FOR PRODUCTION" in KEY.read_text().splitlines()[0]
    assert "NOT FOR PRODUCTION" in (EXAMPLES / "tokens.txt").read_text().splitlines()[0]
    assert "NOT FOR PRODUCTION" in (EXAMPLES / "README.md").read_text()
    request = json.loads((EXAMPLES / "patient-view.json").read_text())
    bundle = json.loads((EXAMPLES / "evaluate.json").read_text())
    resources = [request["prefetch"]["Patient"], *(e["resource"] for e in bundle["entry"])]
    for key in request["prefetch"].values():
        resources += [e["resource"] for e in key.get("entry", [])]
    people = [r for r in resources if r["resourceType"] in ("Patient", "Practitioner", "RelatedPerson")]
    assert people and all(not {"name", "identifier", "telecom", "address"} & set(r) for r in people)
