"""The FHIR write client and SMART Backend Services, over real HTTP on 127.0.0.1.

A real FHIR server (Medplum's router) sits behind the fault proxy; SMART tokens come from a
token endpoint run here that verifies each client assertion with the client's public key.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_adapters.fhir_client import (
    BearerToken,
    FhirClient,
    FhirPermanentError,
    FhirTransientError,
    RetryPolicy,
    retry_after_seconds,
)
from fhir_adapters.smart_auth import ASSERTION_TYPE, SmartBackendAuth

from .fault_proxy import FaultProxy, fault_proxy
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401 (pytest fixture)

FAST = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.05, max_retry_after_s=5)
OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "required", "diagnostics": "Flag.status is required"}],
}
DEVICE = {
    "resourceType": "Device",
    "identifier": [{"system": "https://redflags.dev/fhir/test-device", "value": "client-test"}],
}


@pytest.fixture
def proxy(fhir_server: FhirServer) -> Iterator[FaultProxy]:  # noqa: F811
    with fault_proxy(fhir_server.url) as running:
        yield running


def transaction(value: str) -> dict:
    device = {**DEVICE, "identifier": [{**DEVICE["identifier"][0], "value": value}]}
    entry = {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": device,
        "request": {
            "method": "POST",
            "url": "Device",
            "ifNoneExist": f"identifier={device['identifier'][0]['system']}|{value}",
        },
    }
    return {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}


def test_conditional_create_round_trips_and_headers_are_fhir_json(
    proxy: FaultProxy,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    with FhirClient(proxy.url, auth=BearerToken("s3cret-token"), retry=FAST) as client:
        first = client.transaction(transaction("round-trip"))
        second = client.transaction(transaction("round-trip"))
    assert first["entry"][0]["response"]["status"].startswith("201")
    assert second["entry"][0]["response"]["status"].startswith("200")
    assert len(fhir_server.search("Device?identifier=https://redflags.dev/fhir/test-device|round-trip")) == 1
    for seen in proxy.seen:
        assert seen.headers["Accept"] == seen.headers["Content-Type"] == "application/fhir+json"
        assert seen.headers["Authorization"] == "Bearer s3cret-token"


def test_server_down_is_transient_after_the_policy_attempts(proxy: FaultProxy) -> None:
    proxy.down()
    waits: list[float] = []
    with FhirClient(proxy.url, auth=BearerToken("s3cret-token"), retry=FAST, sleep=waits.append) as client:
        with pytest.raises(FhirTransientError) as caught:
            client.transaction(transaction("down"))
    assert len(waits) == FAST.attempts - 1
    assert caught.value.status is None and "s3cret-token" not in str(caught.value)


def test_500_then_200_succeeds_after_one_retry(proxy: FaultProxy) -> None:
    proxy.fail(500)
    with FhirClient(proxy.url, retry=FAST) as client:
        client.transaction(transaction("e500"))
    assert [s.method for s in proxy.seen] == ["POST", "POST"]


def test_429_retry_after_is_honoured_and_a_long_one_is_left_to_the_caller(proxy: FaultProxy) -> None:
    proxy.fail(429, retry_after="1")
    with FhirClient(proxy.url, retry=FAST) as client:
        client.transaction(transaction("r429"))
    first, second = proxy.seen
    assert second.at - first.at >= 1.0

    proxy.fail(429, retry_after="120")
    with FhirClient(proxy.url, retry=FAST, sleep=lambda s: pytest.fail(f"slept {s}")) as client:
        with pytest.raises(FhirTransientError) as caught:
            client.transaction(transaction("r429-long"))
    assert caught.value.status == 429 and caught.value.retry_after == 120


def test_a_timeout_is_transient_and_retried(proxy: FaultProxy) -> None:
    proxy.delay(2.0)
    with FhirClient(proxy.url, timeout_s=0.5, retry=FAST) as client:
        client.transaction(transaction("slow"))
    assert len(proxy.seen) == 2
    proxy.delay(2.0)
    proxy.delay(2.0)
    with FhirClient(proxy.url, timeout_s=0.5, retry=RetryPolicy(attempts=2, backoff_s=0.01)) as client:
        with pytest.raises(FhirTransientError, match=r"no answer within 0\.5 s"):
            client.transaction(transaction("slow-2"))


def test_400_is_permanent_with_the_servers_outcome_and_never_retried(proxy: FaultProxy) -> None:
    proxy.fail(400, outcome=OUTCOME)
    with FhirClient(proxy.url, auth=BearerToken("s3cret-token"), retry=FAST) as client:
        with pytest.raises(FhirPermanentError) as caught:
            client.request("POST", "Flag?identifier=secret-id", {"resourceType": "Flag"})
    error = caught.value
    assert error.status == 400 and error.outcome == OUTCOME and len(proxy.seen) == 1
    assert "Flag.status is required" in str(error)
    assert "s3cret-token" not in str(error) and "secret-id" not in str(error)  # no token, no query


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7", 0) == 7
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:10 GMT", 1445412480) == 10
    assert retry_after_seconds("soon", 0) is None and retry_after_seconds(None, 0) is None


# --- SMART Backend Services -------------------------------------------------------------------


class TokenServer:
    """A token endpoint that checks client assertions as a SMART authorization server does."""

    def __init__(self, public_pem: bytes, alg: str, client_id: str) -> None:
        self.issued: list[str] = []
        self.jtis: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                return

            def do_POST(self) -> None:
                form = {
                    k: v[0]
                    for k, v in parse_qs(
                        self.rfile.read(int(self.headers["Content-Length"])).decode()
                    ).items()
                }
                try:
                    assert form["grant_type"] == "client_credentials"
                    assert form["client_assertion_type"] == ASSERTION_TYPE
                    assert form["scope"]
                    claims = jwt.decode(  # no iat check: the test moves the client's clock ahead
                        form["client_assertion"],
                        public_pem,
                        algorithms=[alg],
                        audience=server.url,
                        options={"verify_iat": False},
                    )
                    header = jwt.get_unverified_header(form["client_assertion"])
                    assert header["kid"] == "key-1" and header["typ"] == "JWT"
                    assert claims["iss"] == claims["sub"] == client_id
                    assert claims["exp"] - claims["iat"] <= 300 and claims["jti"] not in server.jtis
                    server.jtis.add(claims["jti"])
                except (AssertionError, KeyError, jwt.PyJWTError):
                    self._json(401, {"error": "invalid_client"})
                    return
                token = f"token-{len(server.issued)}"
                server.issued.append(token)
                self._json(200, {"access_token": token, "token_type": "bearer", "expires_in": 300})

            def _json(self, status: int, doc: dict) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def _keys(alg: str) -> tuple[bytes, bytes]:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS384"
        else ec.generate_private_key(ec.SECP384R1())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_tokens_are_cached_renewed_and_refreshed_after_401(alg: str, proxy: FaultProxy) -> None:
    private, public = _keys(alg)
    tokens = TokenServer(public, alg, "redflags-client")
    now = [time.time()]
    auth = SmartBackendAuth(tokens.url, "redflags-client", private, "key-1", alg=alg, clock=lambda: now[0])
    try:
        with FhirClient(proxy.url, auth=auth, retry=FAST) as client:
            client.transaction(transaction(f"smart-{alg}-1"))
            client.transaction(transaction(f"smart-{alg}-2"))
            assert tokens.issued == ["token-0"]  # cached
            now[0] += 290  # within the renewal margin of expires_in=300
            client.transaction(transaction(f"smart-{alg}-3"))
            assert tokens.issued == ["token-0", "token-1"]
            proxy.fail(401)  # the server no longer accepts the token: one new token, one retry
            client.transaction(transaction(f"smart-{alg}-4"))
        assert tokens.issued == ["token-0", "token-1", "token-2"]
        sent = [s.headers.get("Authorization") for s in proxy.seen]
        assert sent == [
            "Bearer token-0",
            "Bearer token-0",
            "Bearer token-1",
            "Bearer token-1",
            "Bearer token-2",
        ]
        assert "token" not in repr(auth).lower().replace("smartbackendauth", "")
    finally:
        tokens.httpd.shutdown()


def test_a_refused_client_assertion_is_permanent(proxy: FaultProxy) -> None:
    private, _public = _keys("ES384")
    _other, wrong_public = _keys("ES384")
    tokens = TokenServer(wrong_public, "ES384", "redflags-client")
    auth = SmartBackendAuth(tokens.url, "redflags-client", private, "key-1", alg="ES384")
    try:
        with FhirClient(proxy.url, auth=auth, retry=FAST) as client:
            with pytest.raises(FhirPermanentError, match="invalid_client"):
                client.transaction(transaction("smart-refused"))
        assert proxy.seen == []  # nothing reached the FHIR server without a token
    finally:
        tokens.httpd.shutdown()


def test_smart_configuration_file_names_its_key_file_relative_to_itself(tmp_path: Path) -> None:
    private, public = _keys("ES384")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "client.pem").write_bytes(private)
    config = tmp_path / "smart.json"
    config.write_text(
        json.dumps(
            {
                "token_url": "https://auth.example/token",
                "client_id": "rf",
                "private_key": "keys/client.pem",
                "kid": "key-1",
                "alg": "ES384",
            }
        )
    )
    auth = SmartBackendAuth.from_file(config)
    claims = jwt.decode(auth.assertion(), public, algorithms=["ES384"], audience="https://auth.example/token")
    assert claims["iss"] == claims["sub"] == "rf"
    config.write_text(json.dumps({"token_url": "https://auth.example/token"}))
    with pytest.raises(ValueError, match="not a SMART backend configuration"):
        SmartBackendAuth.from_file(config)
