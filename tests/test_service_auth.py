"""CDS client JWTs (CDS Hooks 2.0 "Trusting CDS Clients") and static tokens for $evaluate.

Keys are generated here (ES384 on P-384, RS384 on RSA 2048); key sets named by ``jku`` are
served by a real HTTP server on 127.0.0.1; the dependencies are exercised through a real
uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from redflags import logs
from redflags.service.auth.client_jwt import LEEWAY_S, ClientVerifier, Refused
from redflags.service.auth.static_tokens import StaticTokens, TokensError
from redflags.service.auth.trusted_clients import ClientsError, TrustedClients
from redflags.service.settings import ServiceSettings
from redflags.state.jti import FILE_NAME, MemoryJtiStore, SqliteJtiStore

from .auth_helpers import (
    AUD,
    ISS,
    STATIC_TOKEN,
    Clock,
    ThreadedServer,
    claims,
    post,
    public_jwk,
    token,
    write_clients,
)
from .service_harness import ROOT, running_service

#: The CDS Hooks examples, copied with their source notes (SOURCES.md there).
CDS_HOOKS = ROOT / "fixtures" / "external" / "cds-hooks"


# ---------------------------------------------------------------- keys and tokens


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token built by hand, as an attacker would (PyJWT refuses to make these)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


@pytest.fixture
def verifier(ec_key, rsa_key) -> ClientVerifier:
    jwks = {"keys": [public_jwk(ec_key, "ec-1", alg="ES384"), public_jwk(rsa_key, "rsa-1")]}
    clients = TrustedClients.from_data({"clients": [{"iss": ISS, "jwks": jwks}]})
    return ClientVerifier(clients, MemoryJtiStore())


def refusal(verifier: ClientVerifier, bad: str, audience: str = AUD) -> str:
    with pytest.raises(Refused) as caught:
        verifier.verify(bad, audience)
    return caught.value.reason


# ---------------------------------------------------------------- the verifier


@pytest.mark.parametrize(("alg", "kid"), [("ES384", "ec-1"), ("RS384", "rsa-1")])
def test_es384_and_rs384_tokens_verify(verifier, ec_key, rsa_key, alg, kid) -> None:
    private = ec_key if alg == "ES384" else rsa_key
    assert verifier.verify(token(private, alg, kid), AUD) == ISS


def test_aud_may_be_an_array_holding_the_endpoint(verifier, ec_key) -> None:
    assert verifier.verify(token(ec_key, "ES384", "ec-1", claims(aud=[AUD])), AUD) == ISS


def test_alg_none_is_refused(verifier) -> None:
    for alg in ("none", "None", "NONE"):
        bad = forged({"alg": alg, "typ": "JWT", "kid": "ec-1"}, claims(), lambda _m: b"")
        assert refusal(verifier, bad) == "algorithm"


def test_hs384_signed_with_the_public_key_is_refused(verifier, ec_key, rsa_key) -> None:
    """The classic key-confusion attack: HMAC keyed with the bytes of the public key."""
    for private, kid in ((rsa_key, "rsa-1"), (ec_key, "ec-1")):
        pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for alg, digest in (("HS384", hashlib.sha384), ("HS256", hashlib.sha256)):
            header = {"alg": alg, "typ": "JWT", "kid": kid}
            bad = forged(header, claims(), lambda m, d=digest, k=pem: hmac.new(k, m, d).digest())
            assert refusal(verifier, bad) == "algorithm"


def test_algorithms_outside_the_allow_list_are_refused(verifier, rsa_key) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    assert refusal(verifier, token(p256, "ES256", "ec-1")) == "algorithm"
    assert refusal(verifier, token(rsa_key, "RS256", "rsa-1")) == "algorithm"
    assert refusal(verifier, token(rsa_key, "PS384", "rsa-1")) == "algorithm"


def test_token_cannot_pair_an_allowed_alg_with_the_other_key_type(verifier, rsa_key) -> None:
    """RS384 naming the EC key: the key is bound to ES384, whatever the header claims."""
    assert refusal(verifier, token(rsa_key, "RS384", "ec-1")) == "InvalidAlgorithmError"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"aud": "https://cds.example.org/cds-services/other"}, "audience"),
        ({"aud": "https://evil.example.org/cds-services/redflags-patient-view"}, "audience"),
        ({"exp": ("now", -LEEWAY_S - 60)}, "expired"),  # relative to when the test runs
        ({"iat": ("now", LEEWAY_S + 120)}, "ImmatureSignatureError"),
        ({"jti": None}, "missing claim jti"),
        ({"exp": None}, "missing claim exp"),
        ({"iat": None}, "missing claim iat"),
        ({"aud": None}, "missing claim aud"),
        ({"iss": None}, "unknown issuer"),
        ({"iss": "https://other-ehr.example.org/"}, "unknown issuer"),
        ({"jti": ""}, "jti"),
        ({"sub": 42}, "InvalidSubjectError"),  # optional, but a string when sent (RFC 7519)
    ],
)
def test_claims_that_are_refused(verifier, ec_key, change, reason) -> None:
    now = int(time.time())
    change = {k: now + v[1] if isinstance(v, tuple) else v for k, v in change.items()}
    assert refusal(verifier, token(ec_key, "ES384", "ec-1", claims(**change))) == reason


def test_a_token_without_sub_is_accepted_as_cds_hooks_2_defines_it(verifier, ec_key) -> None:
    """CDS Hooks 2.0 "Trusting CDS Clients" lists iss, aud, exp, iat, jti (REQUIRED) and tenant
    (OPTIONAL), no ``sub``; its own example token has none. Requiring it would refuse conformant EHRs."""
    assert "sub" not in claims()
    assert verifier.verify(token(ec_key, "ES384", "ec-1", claims()), AUD) == ISS
    assert verifier.verify(token(ec_key, "ES384", "ec-1", claims(sub=ISS)), AUD) == ISS


def test_small_clock_skew_is_tolerated(verifier, ec_key) -> None:
    now = int(time.time())
    late = claims(exp=now - LEEWAY_S // 2, iat=now - 300)
    early = claims(iat=now + LEEWAY_S // 2)
    assert verifier.verify(token(ec_key, "ES384", "ec-1", late), AUD) == ISS
    assert verifier.verify(token(ec_key, "ES384", "ec-1", early), AUD) == ISS


@pytest.mark.parametrize("kid", ["", None])
def test_kid_is_required(verifier, ec_key, kid) -> None:
    bad = token(ec_key, "ES384", kid)
    assert jwt.get_unverified_header(bad).get("kid") == kid
    assert refusal(verifier, bad) == "kid missing"


def test_typ_must_be_jwt(verifier, ec_key) -> None:
    assert refusal(verifier, token(ec_key, "ES384", "ec-1", typ="at+jwt")) == "typ"
    sign = ECAlgorithm(ECAlgorithm.SHA384).sign
    without_typ = forged({"alg": "ES384", "kid": "ec-1"}, claims(), lambda m: sign(m, ec_key))
    assert "typ" not in jwt.get_unverified_header(without_typ)
    assert refusal(verifier, without_typ) == "typ"
    with_typ = forged({"alg": "ES384", "kid": "ec-1", "typ": "jwt"}, claims(), lambda m: sign(m, ec_key))
    assert verifier.verify(with_typ, AUD) == ISS  # typ compares case-insensitively (RFC 7515)


def test_replayed_jti_is_refused_but_a_refused_token_does_not_burn_its_jti(verifier, ec_key) -> None:
    jti = str(uuid.uuid4())
    wrong_aud = token(ec_key, "ES384", "ec-1", claims(jti=jti, aud="https://elsewhere.example/x"))
    assert refusal(verifier, wrong_aud) == "audience"
    good = token(ec_key, "ES384", "ec-1", claims(jti=jti))
    assert verifier.verify(good, AUD) == ISS
    assert refusal(verifier, good) == "replayed jti"
    assert refusal(verifier, token(ec_key, "ES384", "ec-1", claims(jti=jti))) == "replayed jti"


def test_unknown_kid_bad_signature_and_garbage(verifier, ec_key) -> None:
    assert refusal(verifier, token(ec_key, "ES384", "ec-9")) == "unknown kid"
    impostor = ec.generate_private_key(ec.SECP384R1())
    assert refusal(verifier, token(impostor, "ES384", "ec-1")) == "signature"
    good = token(ec_key, "ES384", "ec-1")
    head, _payload, _sig = good.split(".")
    tampered_payload = b64(json.dumps(claims(iss=ISS, aud=AUD)).encode())
    assert refusal(verifier, f"{head}.{tampered_payload}.{_sig}") == "signature"
    assert refusal(verifier, "abc.def.ghi") == "malformed"
    assert refusal(verifier, "not-a-jwt") == "malformed"


def test_inline_client_never_follows_a_jku(verifier, ec_key, jwks_server) -> None:
    """An issuer listed with its keys inline: a token's jku is never fetched."""
    assert verifier.verify(token(ec_key, "ES384", "ec-1", jku=f"{jwks_server.url}/jwks.json"), AUD) == ISS
    assert sum(jwks_server.hits.values()) == 0


# ---------------------------------------------------------------- jku: listed URLs, fetched and cached


class JwksServer:
    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.hits: Counter[str] = Counter()
        self.status = 200
        self.redirect_to: str | None = None
        self.url = ""


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    state = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            if state.redirect_to:
                self.send_response(302)
                self.send_header("Location", state.redirect_to)
                self.end_headers()
                return
            body = json.dumps(state.jwks).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def remote_verifier(server: JwksServer, clock: Clock) -> ClientVerifier:
    listed = {"iss": ISS, "jku": f"{server.url}/jwks.json"}
    clients = TrustedClients.from_data(
        {"clients": [listed]}, ttl_s=100, refetch_cooldown_s=10, max_stale_s=50, timeout_s=2, clock=clock
    )
    return ClientVerifier(clients, MemoryJtiStore())


def test_listed_jku_is_fetched_once_and_cached(jwks_server, ec_key) -> None:
    jwks_server.jwks = {"keys": [public_jwk(ec_key, "ec-1")]}
    verifier = remote_verifier(jwks_server, Clock())
    jku = f"{jwks_server.url}/jwks.json"
    assert verifier.verify(token(ec_key, "ES384", "ec-1", jku=jku), AUD) == ISS
    assert verifier.verify(token(ec_key, "ES384", "ec-1", jku=jku), AUD) == ISS
    assert verifier.verify(token(ec_key, "ES384", "ec-1"), AUD) == ISS  # no jku: the listed one
    assert jwks_server.hits == Counter({"/jwks.json": 1})


def test_jku_not_listed_for_the_issuer_is_not_followed(jwks_server, ec_key) -> None:
    jwks_server.jwks = {"keys": [public_jwk(ec_key, "ec-1")]}
    verifier = remote_verifier(jwks_server, Clock())
    for other in (f"{jwks_server.url}/evil.json", "https://attacker.example/jwks.json"):
        assert refusal(verifier, token(ec_key, "ES384", "ec-1", jku=other)) == "jku not listed for issuer"
    assert sum(jwks_server.hits.values()) == 0


def test_unknown_kid_refetches_once_then_waits_for_the_cooldown(jwks_server, ec_key) -> None:
    clock = Clock()
    jwks_server.jwks = {"keys": [public_jwk(ec_key, "ec-1")]}
    verifier = remote_verifier(jwks_server, clock)
    assert verifier.verify(token(ec_key, "ES384", "ec-1"), AUD) == ISS
    rotated = ec.generate_private_key(ec.SECP384R1())
    jwks_server.jwks = {"keys": [public_jwk(ec_key, "ec-1"), public_jwk(rotated, "ec-2")]}
    clock.now += 11  # past the cooldown: a new kid is worth one fetch (key rotation)
    assert verifier.verify(token(rotated, "ES384", "ec-2"), AUD) == ISS
    assert jwks_server.hits["/jwks.json"] == 2
    for made_up in ("ec-3", "ec-4", "ec-5"):  # within the cooldown: no fetch per made-up kid
        assert refusal(verifier, token(rotated, "ES384", made_up)) == "unknown kid"
    assert jwks_server.hits["/jwks.json"] == 2


def test_key_set_is_refetched_after_its_ttl_and_stale_keys_serve_a_short_outage(jwks_server, ec_key) -> None:
    clock = Clock()
    jwks_server.jwks = {"keys": [public_jwk(ec_key, "ec-1")]}
    verifier = remote_verifier(jwks_server, clock)
    assert verifier.verify(token(ec_key, "ES384", "ec-1"), AUD) == ISS
    clock.now += 101  # past the TTL
    assert verifier.verify(token(ec_key, "ES384", "ec-1"), AUD) == ISS
    assert jwks_server.hits["/jwks.json"] == 2
    jwks_server.status = 500
    clock.now += 101  # the refresh fails: the last good set still serves (within max_stale)
    assert verifier.verify(token(ec_key, "ES384", "ec-1"), AUD) == ISS
    assert jwks_server.hits["/jwks.json"] == 3
    clock.now += 60  # TTL + max_stale since the last success: the stale set is dropped
    assert refusal(verifier, token(ec_key, "ES384", "ec-1")) == "unknown kid"


def test_key_set_fetch_does_not_follow_redirects(jwks_server, ec_key) -> None:
    jwks_server.redirect_to = f"{jwks_server.url}/elsewhere.json"
    verifier = remote_verifier(jwks_server, Clock())
    assert refusal(verifier, token(ec_key, "ES384", "ec-1")) == "unknown kid"
    assert jwks_server.hits == Counter({"/jwks.json": 1})


def test_oversized_key_set_is_refused(jwks_server, ec_key) -> None:
    jwks_server.jwks = {"keys": [public_jwk(ec_key, "ec-1")], "padding": "x" * 300_000}
    verifier = remote_verifier(jwks_server, Clock())
    assert refusal(verifier, token(ec_key, "ES384", "ec-1")) == "unknown kid"
    jwks_server.jwks.pop("padding")
    assert refusal(verifier, token(ec_key, "ES384", "ec-1")) == "unknown kid"  # cooldown: no refetch yet
    assert jwks_server.hits["/jwks.json"] == 1


def test_fetched_set_skips_keys_it_cannot_use(jwks_server, ec_key) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    jwks_server.jwks = {
        "keys": [
            public_jwk(p256, "p256"),
            {"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
            public_jwk(ec_key, "ec-1"),
        ]
    }
    verifier = remote_verifier(jwks_server, Clock())
    assert verifier.verify(token(ec_key, "ES384", "ec-1"), AUD) == ISS
    assert refusal(verifier, token(ec_key, "ES384", "h")) == "unknown kid"


# ---------------------------------------------------------------- the specification's example


def test_specification_jwt_example_verifies_with_the_expiry_check_off() -> None:
    example = json.loads((CDS_HOOKS / "jwt-example.spec-2.0.1.json").read_text())
    compact = example["compact_jws"]
    assert jwt.get_unverified_header(compact) == example["header"]
    assert jwt.decode(compact, options={"verify_signature": False}) == example["payload"]
    iss, aud = example["payload"]["iss"], example["payload"]["aud"]
    clients = TrustedClients.from_data({"clients": [{"iss": iss, "jwks": example["jwks_public"]}]})
    assert ClientVerifier(clients, MemoryJtiStore(), verify_exp=False).verify(compact, aud) == iss
    assert refusal(ClientVerifier(clients, MemoryJtiStore()), compact, aud) == "expired"
    # The sandbox's published key (same kid forced) does not verify the spec's signature.
    sandbox = json.loads((CDS_HOOKS / "jwks.sandbox.json").read_text())
    wrong = {"keys": [{**sandbox["keys"][0], "kid": "example-kid"}]}
    wrong_clients = TrustedClients.from_data({"clients": [{"iss": iss, "jwks": wrong}]})
    assert (
        refusal(ClientVerifier(wrong_clients, MemoryJtiStore(), verify_exp=False), compact, aud)
        == "signature"
    )


def test_sandbox_key_set_is_accepted_as_a_trusted_key_set() -> None:
    sandbox = json.loads((CDS_HOOKS / "jwks.sandbox.json").read_text())
    shape = json.loads((CDS_HOOKS / "jwt-claims.sandbox-transcribed.json").read_text())
    clients = TrustedClients.from_data({"clients": [{"iss": shape["payload"]["iss"], "jwks": sandbox}]})
    client = clients.get("https://sandbox.cds-hooks.org")
    assert client is not None and client.keys.key(shape["header"]["kid"]).algorithm_name == "ES384"


# ---------------------------------------------------------------- the clients file


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], 'expected {"clients": [...]}'),
        ({"clients": []}, "no clients listed"),
        ({"clients": [], "extra": 1}, 'expected {"clients": [...]}'),
        ({"clients": [{"jku": "https://x.example/j"}]}, "clients[0]: iss must be a non-empty string"),
        ({"clients": [{"iss": "a"}]}, "clients[0] (a): give exactly one of jwks"),
        ({"clients": [{"iss": "a", "jku": "https://x.example/j", "jwks": {"keys": []}}]}, "exactly one"),
        ({"clients": [{"iss": "a", "jwk": {}}]}, "unknown field(s) jwk"),
        ({"clients": [{"iss": "a", "jku": "http://ehr.example.org/jwks"}]}, "must be https"),
        ({"clients": [{"iss": "a", "jku": "ftp://ehr.example.org/jwks"}]}, "must be https"),
        ({"clients": [{"iss": "a", "jku": "jwks.json"}]}, "not a plain absolute URL"),
        ({"clients": [{"iss": "a", "jwks": {"keys": []}}]}, "no usable key"),
        ({"clients": [{"iss": "a", "jwks": []}]}, "a JWK Set is an object"),
        (
            {"clients": [{"iss": "a", "jwks": {"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}}]},
            "key 0",
        ),
    ],
)
def test_bad_clients_files_are_refused_with_one_line(data, message) -> None:
    with pytest.raises(ClientsError) as caught:
        TrustedClients.from_data(data)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_keys_in_the_clients_file_are_named(ec_key, rsa_key) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    p256 = ec.generate_private_key(ec.SECP256R1())
    private_jwk = ECAlgorithm.to_jwk(ec_key, as_dict=True)
    cases = [
        (public_jwk(weak, "w"), "RSA key of 1024 bits"),
        (public_jwk(p256, "p"), "unsupported key type 'EC'/'P-256'"),
        ({**private_jwk, "kid": "d"}, "private or symmetric key material"),
        (public_jwk(ec_key, "e", alg="RS384"), "alg 'RS384' is not allowed"),
        (public_jwk(rsa_key, "r", use="enc"), "use 'enc'"),
        ({k: v for k, v in public_jwk(ec_key, "x").items() if k != "kid"}, "has no kid"),
        ({"kty": "EC", "crv": "P-384", "kid": "broken", "x": "AA", "y": "AA"}, "not a valid ES384 key"),
    ]
    for jwk, message in cases:
        with pytest.raises(ClientsError, match="clients\\[0\\]") as caught:
            TrustedClients.from_data({"clients": [{"iss": ISS, "jwks": {"keys": [jwk]}}]})
        assert message in str(caught.value), (message, str(caught.value))
    twice = {"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "e")]}}
    with pytest.raises(ClientsError, match="issuer listed twice"):
        TrustedClients.from_data({"clients": [twice, twice]})


def test_loopback_jku_may_be_plain_http() -> None:
    for url in ("http://127.0.0.1:9/j", "http://localhost/j", "http://[::1]:8/j", "https://ehr.example/j"):
        assert TrustedClients.from_data({"clients": [{"iss": "a", "jku": url}]}).get("a").jku == url


def test_clients_file_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "clients.json"
    path.write_text("{not json")
    with pytest.raises(ClientsError, match=r"clients\.json: not JSON"):
        TrustedClients.from_file(path)
    with pytest.raises(ClientsError, match="cannot read"):
        TrustedClients.from_file(tmp_path / "missing.json")


# ---------------------------------------------------------------- static tokens


def test_static_tokens_match_in_constant_time_and_name_their_line(tmp_path) -> None:
    path = tmp_path / "tokens.txt"
    other = "another-token-0123456789"
    path.write_text(f"# integration engines\n{STATIC_TOKEN}\n\n  {other}  \n")
    tokens = StaticTokens.from_file(path)
    assert len(tokens) == 2
    assert tokens.match(STATIC_TOKEN) == "token-line-2"
    assert tokens.match(other) == "token-line-4"
    assert tokens.match(STATIC_TOKEN[:-1]) is None and tokens.match("") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("short-token\n", "line 1: token shorter than 16"),
        ("# only a comment\n\n", "no tokens"),
        ("good-token-0123456789\nhas a space in it xxxxxx\n", "line 2 is not a bearer token"),
    ],
)
def test_bad_tokens_files_never_echo_a_token(tmp_path, text, message) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(text)
    with pytest.raises(TokensError) as caught:
        StaticTokens.from_file(path)
    assert message in str(caught.value)
    assert "short-token" not in str(caught.value) and "has a space" not in str(caught.value)


# ---------------------------------------------------------------- replay stores


def test_memory_store_forgets_an_id_when_it_expires() -> None:
    clock = Clock()
    store = MemoryJtiStore(clock)
    assert store.first_use(ISS, "a", clock.now + 10)
    assert not store.first_use(ISS, "a", clock.now + 10)
    assert store.first_use("https://other.example/", "a", clock.now + 10)  # ids are per issuer
    clock.now += 11
    assert store.first_use(ISS, "b", clock.now + 10) and len(store) == 1


def test_sqlite_store_is_shared_by_workers_and_survives_restarts(tmp_path) -> None:
    clock = Clock()
    worker_1 = SqliteJtiStore(tmp_path / FILE_NAME, clock)
    worker_2 = SqliteJtiStore(tmp_path / FILE_NAME, clock)
    assert worker_1.first_use(ISS, "a", clock.now + 10)
    assert not worker_2.first_use(ISS, "a", clock.now + 10)  # replay sent to another worker
    worker_1.close()
    restarted = SqliteJtiStore(tmp_path / FILE_NAME, clock)
    assert not restarted.first_use(ISS, "a", clock.now + 10)
    clock.now += 11  # expired: the id may come back (its token's exp check refuses old ones)
    assert worker_2.first_use(ISS, "a", clock.now + 10)
    assert not restarted.first_use(ISS, "a", clock.now + 10)
    worker_2.close()
    restarted.close()


# ---------------------------------------------------------------- over real HTTP


def test_service_starts_with_clients_and_leaves_health_open(tmp_path, ec_key) -> None:
    clients = write_clients(tmp_path / "clients.json", ec_key)
    feedback = tmp_path / "data" / "feedback.sqlite"
    with running_service(tmp_path, "--clients", str(clients), "--feedback-db", str(feedback)) as service:
        assert requests.get(f"{service.url}/healthz", timeout=5).status_code == 200
    # the replay store every worker shares: beside the state store (serve names it), no longer
    # guessed from the feedback file's folder
    assert (tmp_path / FILE_NAME).exists() and not (tmp_path / "data" / FILE_NAME).exists()
    assert '"event": "unauthenticated"' not in service.log()


def serve_fails(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", "serve", "--port", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_a_bad_clients_or_tokens_file_with_one_line(tmp_path, ec_key) -> None:
    bad_clients = tmp_path / "clients.json"
    bad_clients.write_text(json.dumps({"clients": [{"iss": ISS, "jku": "http://ehr.example.org/jwks"}]}))
    done = serve_fails("--clients", str(bad_clients), "--public-url", "https://cds.example.org")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: {bad_clients}: clients[0] ({ISS}): jku 'http://ehr.example.org/jwks' must be https "
        "(plain http only on loopback)"
    ]
    bad_tokens = tmp_path / "tokens.txt"
    bad_tokens.write_text("tiny-secret\n")
    good_clients = tmp_path / "good-clients.json"
    good_clients.write_text(
        json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "k")]}}]})
    )
    done = serve_fails(
        "--clients", str(good_clients), "--tokens", str(bad_tokens), "--public-url", "https://cds.example.org"
    )
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "line 1: token shorter than 16" in done.stderr and "tiny-secret" not in done.stderr


def test_dependencies_over_real_http_and_no_token_in_the_logs(tmp_path, ec_key, caplog) -> None:
    log_stream = io.StringIO()
    logs.configure("info", stream=log_stream)
    caplog.set_level(logging.DEBUG)
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(STATIC_TOKEN + "\n")
    settings = ServiceSettings(
        clients=str(write_clients(tmp_path / "clients.json", ec_key)),
        tokens=str(tokens_file),
        feedback_db=str(tmp_path / "feedback.sqlite"),
        jti_db=str(tmp_path / FILE_NAME),
    )
    sent: list[str] = [STATIC_TOKEN]
    with ThreadedServer(settings) as server:
        probe, evaluate = f"{server.url}/auth-probe/cds", f"{server.url}/auth-probe/evaluate"
        good = token(ec_key, "ES384", "ec-1", claims(aud=probe))
        sent.append(good)
        ok = post(probe, good)
        assert ok.status_code == 200 and ok.json() == {"client": ISS}
        refused = [
            post(probe),  # no credentials
            post(probe, good),  # replay
            post(probe, good[:-1] + ("A" if good[-1] != "A" else "B")),  # broken signature
            post(probe, STATIC_TOKEN),  # static tokens are for $evaluate only
            post(probe, token(ec_key, "ES384", "ec-1", claims(aud=evaluate))),  # another endpoint's aud
            post(evaluate, "wrong-" + STATIC_TOKEN),
            post(evaluate, token(ec_key, "ES384", "ec-1", claims(aud=evaluate, exp=int(time.time()) - 600))),
            requests.post(probe, headers={"Authorization": f"Basic {STATIC_TOKEN}"}, timeout=10),
        ]
        for response in refused:
            assert response.status_code == 401
            assert response.json() == refused[0].json()  # the same for every cause
            assert response.json()["resourceType"] == "OperationOutcome"
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert post(evaluate, STATIC_TOKEN).json() == {"client": "token-line-1"}
        jwt_for_evaluate = token(ec_key, "ES384", "ec-1", claims(aud=evaluate))
        sent.append(jwt_for_evaluate)
        assert post(evaluate, jwt_for_evaluate).json() == {"client": ISS}
    captured = log_stream.getvalue() + caplog.text
    refusals = [json.loads(line) for line in log_stream.getvalue().splitlines() if "auth_refused" in line]
    assert [line["reason"] for line in refusals] == [
        "no bearer token",
        "replayed jti",
        "signature",
        "malformed",
        "audience",
        "unknown token",
        "expired",
        "no bearer token",
    ]
    for secret in sent:
        assert secret not in captured
        assert secret.split(".")[-1] not in captured


def test_public_url_is_the_audience_behind_a_proxy(tmp_path, ec_key) -> None:
    settings = ServiceSettings(
        clients=str(write_clients(tmp_path / "clients.json", ec_key)),
        feedback_db=str(tmp_path / "feedback.sqlite"),
        jti_db=str(tmp_path / FILE_NAME),
        public_url="https://cds.example.org/",
    )
    with ThreadedServer(settings) as server:
        probe = f"{server.url}/auth-probe/cds"
        public = "https://cds.example.org/auth-probe/cds"
        assert post(probe, token(ec_key, "ES384", "ec-1", claims(aud=probe))).status_code == 401
        assert post(probe, token(ec_key, "ES384", "ec-1", claims(aud=public))).json() == {"client": ISS}
