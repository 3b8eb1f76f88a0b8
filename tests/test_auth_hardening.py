"""Issue 10, items 11 and 13 and the jku / jti suspicions: who may call, for how long, and what a
slow key set server can hold.

* The JWT ``aud`` is compared with the configured public URL(s) only, never with a URL built
  from the ``Host`` header; trusted clients without ``--public-url`` stop ``serve`` (exit 2).
* A token lives at most five minutes (configurable): ``exp`` far ahead, ``iat`` 0 or missing
  are refused; its ``jti`` row goes once that lifetime is over; the store syncs every id to disk.
* A slow ``jku`` fetch runs once, outside the lock: known keys keep verifying, at most a few
  callers wait for it, and another client authenticates meanwhile; a body that trickles in
  past the deadline is refused.

Real HTTP on 127.0.0.1 throughout (uvicorn, http.server key set servers, ``redflags serve``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from redflags.service.auth.callers import Authenticator, AuthSetupError
from redflags.service.auth.client_jwt import LEEWAY_S, ClientVerifier, Refused
from redflags.service.auth.trusted_clients import MAX_WAITERS, TrustedClients
from redflags.service.settings import ServiceSettings
from redflags.state.jti import FILE_NAME, MemoryJtiStore, SqliteJtiStore

from .auth_helpers import (
    AUD,
    ISS,
    Clock,
    ThreadedServer,
    claims,
    post,
    public_jwk,
    token,
    write_clients,
)
from .service_harness import ROOT

KID = "ec-1"  # the kid write_clients lists
OTHER_ISS = "https://slow-ehr.example.org/"
DEADLINE_S = 30.0  # bound on every wait here; never reached when the code is right
HOLD_S = 3 * DEADLINE_S  # how long the slow key set server stalls unless released


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def verifier_for(key: Any, **options: Any) -> ClientVerifier:
    clients = TrustedClients.from_data({"clients": [{"iss": ISS, "jwks": {"keys": [public_jwk(key, KID)]}}]})
    return ClientVerifier(clients, MemoryJtiStore(), **options)


def refusal(verifier: ClientVerifier, bad: str, audience: str = AUD) -> str:
    with pytest.raises(Refused) as caught:
        verifier.verify(bad, audience)
    return caught.value.reason


# ---------------------------------------------------------------- item 11: the audience


def test_a_spoofed_host_header_does_not_make_another_services_token_valid(tmp_path, ec_key) -> None:
    settings = ServiceSettings(
        clients=str(write_clients(tmp_path / "clients.json", ec_key)),
        feedback_db=str(tmp_path / "feedback.sqlite"),
        jti_db=str(tmp_path / FILE_NAME),
        public_urls=("https://cds.example.org", "https://cds-alias.example.org/base/"),
    )
    with ThreadedServer(settings) as server:
        probe = f"{server.url}/auth-probe/cds"
        for foreign in ("other-service.example", "127.0.0.1", f"127.0.0.1:{server.url.rsplit(':', 1)[1]}"):
            aud = f"http://{foreign}/auth-probe/cds"  # the URL as received, Host spoofed to match
            spoofed = requests.post(
                probe,
                headers={
                    "Authorization": f"Bearer {token(ec_key, 'ES384', KID, claims(aud=aud))}",
                    "Host": foreign,
                },
                json={},
                timeout=10,
            )
            assert spoofed.status_code == 401
        for base in ("https://cds.example.org", "https://cds-alias.example.org/base"):  # each listed URL
            good = token(ec_key, "ES384", KID, claims(aud=f"{base}/auth-probe/cds"))
            assert post(probe, good).json() == {"client": ISS}


def test_trusted_clients_without_a_public_url_are_refused_at_setup(tmp_path, ec_key) -> None:
    settings = ServiceSettings(
        clients=str(write_clients(tmp_path / "clients.json", ec_key)),
        feedback_db=str(tmp_path / "feedback.sqlite"),
        jti_db=str(tmp_path / FILE_NAME),
    )
    with pytest.raises(AuthSetupError, match="--clients needs --public-url"):
        Authenticator.from_settings(settings)
    tokens_only = tmp_path / "tokens.txt"  # static tokens have no audience: no public URL needed
    tokens_only.write_text("s2s-" + "k" * 28 + "\n")
    assert Authenticator.from_settings(ServiceSettings(tokens=str(tokens_only))).tokens is not None


def serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", "serve", "--port", "1", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


PROBLEMS = {
    "cds.example.org": "not an absolute http(s) URL",
    "ftp://cds.example.org": "not an absolute http(s) URL",
    "https://cds.example.org/?x=1": "a base URL has no query, fragment or user",
    "https://user@cds.example.org": "a base URL has no query, fragment or user",
    "https://cds.example.org:99999": "not a URL",
    "https://cds.example.org\\@evil.example": "spaces, backslashes and control characters are not allowed",
}


def test_serve_with_clients_and_no_public_url_exits_2_with_one_line(tmp_path, ec_key) -> None:
    clients = write_clients(tmp_path / "clients.json", ec_key)
    done = serve("--clients", str(clients), "--feedback-db", str(tmp_path / "f.sqlite"), "--no-state")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "Error: --clients needs --public-url (the URL CDS clients call, the JWT audience): "
        "it is never taken from the Host header a caller sends"
    ]
    for bad in PROBLEMS:
        done = serve("--clients", str(clients), "--public-url", bad, "--no-state")
        assert done.returncode == 2, bad
        assert done.stderr.strip().splitlines() == [f"Error: --public-url {bad!r}: {PROBLEMS[bad]}"]


# ---------------------------------------------------------------- item 13: token lifetime


def test_tokens_that_live_too_long_or_claim_an_old_or_missing_iat_are_refused(ec_key) -> None:
    verifier = verifier_for(ec_key)
    now = int(time.time())
    cases = {
        "exp a year ahead": (claims(exp=now + 365 * 86400), "lifetime over the limit"),
        "iat 0": (claims(iat=0), "lifetime over the limit"),
        "iat 0 and exp 200": (claims(iat=0, exp=200), "expired"),
        "old iat, short life": (claims(iat=now - 900, exp=now - 900 + 300), "expired"),
        "old iat, exp ahead": (claims(iat=now - 400, exp=now + 60), "lifetime over the limit"),
        "iat missing": (claims(iat=None), "missing claim iat"),
        "exp missing": (claims(exp=None), "missing claim exp"),
        "iat in the future": (
            claims(iat=now + LEEWAY_S + 120, exp=now + LEEWAY_S + 300),
            "ImmatureSignatureError",
        ),
        "iat a string": (claims(iat=str(now)), "iat/exp not numbers"),
        "iat true": (claims(iat=True), "iat/exp not numbers"),
    }
    reasons = {
        name: refusal(verifier, token(ec_key, "ES384", KID, payload)) for name, (payload, _) in cases.items()
    }
    assert reasons == {name: reason for name, (_, reason) in cases.items()}
    assert verifier.verify(token(ec_key, "ES384", KID, claims(iat=now - 10, exp=now + 290)), AUD) == ISS


def test_an_iat_older_than_the_lifetime_is_refused_even_with_exp_within_it(ec_key) -> None:
    clock = Clock()
    clock.now = time.time() + 400  # the service's clock runs 400 s ahead of PyJWT's exp check
    verifier = verifier_for(ec_key, clock=clock)
    now = int(time.time())
    assert refusal(verifier, token(ec_key, "ES384", KID, claims(iat=now, exp=now + 300))) == "iat too old"


def test_the_lifetime_limit_is_configurable(ec_key) -> None:
    now = int(time.time())
    ten_minutes = token(ec_key, "ES384", KID, claims(iat=now, exp=now + 600))
    assert refusal(verifier_for(ec_key), ten_minutes) == "lifetime over the limit"
    assert verifier_for(ec_key, max_lifetime_s=600).verify(ten_minutes, AUD) == ISS


def test_a_far_future_exp_is_refused_over_http(tmp_path, ec_key) -> None:
    settings = ServiceSettings(
        clients=str(write_clients(tmp_path / "clients.json", ec_key)),
        feedback_db=str(tmp_path / "feedback.sqlite"),
        jti_db=str(tmp_path / FILE_NAME),
        public_url="https://cds.example.org",
    )
    aud = "https://cds.example.org/auth-probe/cds"
    with ThreadedServer(settings) as server:
        probe = f"{server.url}/auth-probe/cds"
        forever = token(ec_key, "ES384", KID, claims(aud=aud, exp=int(time.time()) + 10 * 365 * 86400))
        assert post(probe, forever).status_code == 401
        assert post(probe, token(ec_key, "ES384", KID, claims(aud=aud, iat=0))).status_code == 401
        assert post(probe, token(ec_key, "ES384", KID, claims(aud=aud))).status_code == 200
    store = SqliteJtiStore(tmp_path / FILE_NAME)
    assert len(store) == 1  # the refused tokens left no row; the accepted one, one
    store.close()


# ---------------------------------------------------------------- jti rows: bounded, purged, durable


def test_jti_rows_are_purged_once_expired_and_bounded_by_the_lifetime(tmp_path, ec_key) -> None:
    clock = Clock()
    store = SqliteJtiStore(tmp_path / FILE_NAME, clock)
    assert store.first_use(ISS, "old-1", clock.now + 10) and store.first_use(ISS, "old-2", clock.now + 20)
    assert store.first_use(ISS, "live", clock.now + 100)
    clock.now += 30
    assert store.purge() == 2 and len(store) == 1
    clock.now += store.PURGE_EVERY_S + 100  # "live" expired too: the next insert purges on its own
    assert store.first_use(ISS, "new", clock.now + 10) and len(store) == 1

    verifier = ClientVerifier(
        TrustedClients.from_data({"clients": [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, KID)]}}]}),
        SqliteJtiStore(tmp_path / "verified.sqlite", time.time),
    )
    assert verifier.verify(token(ec_key, "ES384", KID), AUD) == ISS
    late = Clock()
    late.now = time.time() + 300 + 2 * LEEWAY_S + 1  # the longest a valid token's row can be needed
    later = SqliteJtiStore(tmp_path / "verified.sqlite", late)
    assert len(later) == 1 and later.purge() == 1 and len(later) == 0
    later.close()
    store.close()


def test_the_replay_store_syncs_every_id_to_disk(tmp_path) -> None:
    store = SqliteJtiStore(tmp_path / FILE_NAME)
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync at each commit
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_an_id_recorded_just_before_a_crash_is_still_refused(tmp_path) -> None:
    """A process killed with SIGKILL right after accepting a token: the restarted store refuses it."""
    path = tmp_path / FILE_NAME
    script = (
        "import os, signal, sys, time\n"
        "from pathlib import Path\n"
        "from redflags.state.jti import SqliteJtiStore\n"
        f"store = SqliteJtiStore(Path({str(path)!r}))\n"
        f"assert store.first_use({ISS!r}, 'captured', time.time() + 300)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    restarted = SqliteJtiStore(path)
    assert not restarted.first_use(ISS, "captured", time.time() + 300)
    restarted.close()


# ---------------------------------------------------------------- jku: a slow key set server


class SlowJwks:
    """A key set server on 127.0.0.1 that holds each answer until released (or trickles it)."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        self.release = threading.Event()
        self.hit = threading.Event()
        self.hits = 0
        self.hold = True
        self.trickle_s: float | None = None
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                state.hits += 1
                state.hit.set()
                if state.hold:
                    state.release.wait(HOLD_S)
                body = json.dumps(state.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if state.trickle_s is None:
                        self.wfile.write(body)
                        return
                    for i in range(len(body)):  # the fault under test: one byte at a time
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(state.trickle_s)
                except OSError:
                    pass  # the client gave up: that is what the test wants

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_jwks(ec_key) -> Iterator[SlowJwks]:
    server = SlowJwks({"keys": [public_jwk(ec_key, KID)]})
    try:
        yield server
    finally:
        server.close()


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(fn(*args))
        except Exception as exc:  # the assertion looks at it
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_known_keys_verify_while_the_same_key_set_is_being_refetched(slow_jwks, ec_key) -> None:
    clock = Clock()
    clients = TrustedClients.from_data(
        {"clients": [{"iss": ISS, "jku": slow_jwks.url}]},
        ttl_s=100,
        refetch_cooldown_s=10,
        timeout_s=HOLD_S,
        clock=clock,
    )
    verifier = ClientVerifier(clients, MemoryJtiStore())
    slow_jwks.hold = False
    assert verifier.verify(token(ec_key, "ES384", KID), AUD) == ISS  # first fetch, cached
    slow_jwks.hold, slow_jwks.hits = True, 0
    slow_jwks.hit.clear()
    clock.now += 101  # past the TTL: the next call refetches, and the server now stalls
    fetcher, fetched = in_thread(verifier.verify, token(ec_key, "ES384", KID), AUD)
    assert slow_jwks.hit.wait(DEADLINE_S)
    # the refresh is in flight: a caller with a kid the cached set holds is not held behind it
    other, answer = in_thread(verifier.verify, token(ec_key, "ES384", KID), AUD)
    other.join(DEADLINE_S)
    assert not other.is_alive() and answer == [ISS]
    assert not slow_jwks.release.is_set()
    slow_jwks.release.set()
    fetcher.join(DEADLINE_S)
    assert fetched == [ISS] and slow_jwks.hits == 1


def test_callers_waiting_for_one_fetch_share_it_and_their_number_is_bounded(slow_jwks, ec_key) -> None:
    clients = TrustedClients.from_data({"clients": [{"iss": ISS, "jku": slow_jwks.url}]}, timeout_s=HOLD_S)
    verifier = ClientVerifier(clients, MemoryJtiStore())
    callers = MAX_WAITERS + 6
    with ThreadPoolExecutor(callers) as pool:
        first = pool.submit(verifier.verify, token(ec_key, "ES384", KID), AUD)
        assert slow_jwks.hit.wait(DEADLINE_S)
        rest = [pool.submit(verifier.verify, token(ec_key, "ES384", KID), AUD) for _ in range(callers - 1)]
        refused_at_once = 0
        deadline = time.monotonic() + DEADLINE_S
        while refused_at_once < callers - 1 - MAX_WAITERS and time.monotonic() < deadline:
            refused_at_once = sum(1 for f in rest if f.done() and isinstance(f.exception(), Refused))
            time.sleep(0.01)
        assert refused_at_once == callers - 1 - MAX_WAITERS  # while the fetch is still held
        assert not slow_jwks.release.is_set()
        slow_jwks.release.set()
        assert first.result(DEADLINE_S) == ISS
        waited = [f for f in rest if f.exception(DEADLINE_S) is None]
        assert len(waited) == MAX_WAITERS and {f.result() for f in waited} == {ISS}
    assert slow_jwks.hits == 1  # one fetch served them all


def test_a_key_set_trickling_in_past_the_deadline_is_refused(slow_jwks, ec_key) -> None:
    slow_jwks.hold, slow_jwks.trickle_s = False, 0.1  # each byte well within the read timeout
    clients = TrustedClients.from_data({"clients": [{"iss": ISS, "jku": slow_jwks.url}]}, timeout_s=0.5)
    verifier = ClientVerifier(clients, MemoryJtiStore())
    assert refusal(verifier, token(ec_key, "ES384", KID)) == "unknown kid"


def test_another_client_authenticates_while_a_slow_jku_is_being_fetched(tmp_path, slow_jwks, ec_key) -> None:
    """Many calls naming the slow issuer (an attacker's made-up kids will do) hold at most a few
    of the threads that verify tokens: a client with its own keys still gets in."""
    clients = tmp_path / "clients.json"
    clients.write_text(
        json.dumps(
            {
                "clients": [
                    {"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, KID)]}},
                    {"iss": OTHER_ISS, "jku": slow_jwks.url},
                ]
            }
        )
    )
    settings = ServiceSettings(
        clients=str(clients),
        feedback_db=str(tmp_path / "feedback.sqlite"),
        jti_db=str(tmp_path / FILE_NAME),
        public_url="https://cds.example.org",
    )
    aud = "https://cds.example.org/auth-probe/cds"
    intruder = ec.generate_private_key(ec.SECP384R1())
    floods = 60  # more than the 40 threads anyio gives to_thread by default
    server = ThreadedServer(settings)
    # the key set server is slow but within the fetch's time limit (raised here to HOLD_S)
    server.server.config.app.state.auth = Authenticator(
        verifier=ClientVerifier(
            TrustedClients.from_file(clients, timeout_s=HOLD_S), SqliteJtiStore(tmp_path / FILE_NAME)
        ),
        public_urls=("https://cds.example.org",),
    )

    def call(credential: str) -> requests.Response:
        return requests.post(
            probe, headers={"Authorization": f"Bearer {credential}"}, json={}, timeout=DEADLINE_S
        )

    with server, ThreadPoolExecutor(floods) as pool:
        probe = f"{server.url}/auth-probe/cds"
        slow = [
            pool.submit(call, token(intruder, "ES384", f"kid-{n}", claims(iss=OTHER_ISS, aud=aud)))
            for n in range(floods)
        ]
        assert slow_jwks.hit.wait(DEADLINE_S)
        deadline = time.monotonic() + DEADLINE_S
        while sum(f.done() for f in slow) < floods - 1 - MAX_WAITERS and time.monotonic() < deadline:
            time.sleep(0.01)
        answer = call(token(ec_key, "ES384", KID, claims(aud=aud)))
        assert answer.status_code == 200 and answer.json() == {"client": ISS}
        assert not slow_jwks.release.is_set()  # ... while the slow fetch was still held
        slow_jwks.release.set()
        assert {f.result(DEADLINE_S).status_code for f in slow} == {401}
    assert slow_jwks.hits == 1
