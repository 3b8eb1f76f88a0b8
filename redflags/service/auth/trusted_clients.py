"""The CDS clients we trust (``redflags serve --clients FILE``) and their public keys.

FILE is JSON ``{"clients": [{"iss": ..., "jwks": {"keys": [...]}} | {"iss": ..., "jku": URL}]}``:
each issuer comes with either its JWK Set inline or the one URL its key set may be fetched
from. Only keys CDS Hooks recommends are usable: ES384 (EC P-384) and RS384 (RSA, 2048 bits or
more); a key's own ``alg``, when given, must agree. The file is checked whole at startup so a
mistake stops ``redflags serve`` with one line instead of refusing every call later.

Fetched key sets (``jku``) are cached for ``ttl_s``; a token whose ``kid`` is unknown triggers
one refetch (key rotation), at most once per ``refetch_cooldown_s`` so a stream of made-up
kids cannot turn us into a request amplifier. When a refresh fails, the last good set stays in
use for at most ``max_stale_s`` (an EHR's brief outage must not lock every clinician out).
A ``jku`` must be https; plain http is accepted for loopback hosts only (tests, a local sidecar).

A fetch never blocks verification with keys already known: it runs outside the lock, one per
key set at a time (single flight); callers with a cached key (fresh or still usable stale) go
on, callers that need the new set wait for that one fetch up to its deadline, and at most
``MAX_WAITERS`` of them: the rest are refused at once, so a slow or hostile key set server (or a
stream of tokens with made-up kids for its issuer) holds a few threads, never the whole pool
that verifies every other client. The body must arrive whole within ``timeout_s`` (each read
is also bounded by it, so a fetch ends within about twice that) and within ``MAX_JWKS_BYTES``.

An entry may also list ``"fhirServers": ["https://ehr.example.org", ...]``: the only origins
(scheme://host[:port]) its CDS calls may name as ``fhirServer``, at any address, private ones
included (see ``redflags.service.cds.fhir_policy``). Without it, any https origin on a public address.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import requests
import urllib3
from jwt import PyJWK
from jwt.exceptions import PyJWTError

from engine.logger import get_logger
from fhir_adapters.safe_url import Origin, UnsafeUrl, parse_origin

log = get_logger("redflags.service.auth")

#: The signature algorithms we accept (CDS Hooks 2.0 recommends exactly these two).
ALGORITHMS = ("ES384", "RS384")
MIN_RSA_BITS = 2048
MAX_JWKS_BYTES = 256 * 1024
#: Callers that may wait for one key set fetch in flight (the others are refused at once).
MAX_WAITERS = 8


class ClientsError(ValueError):
    """The trusted clients file is unusable; the message is one line, fit for the command line."""


def key_algorithm(jwk: Mapping[str, Any]) -> str:
    """The one allowed algorithm this public JWK verifies, or ValueError saying why it cannot."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if "d" in jwk or "p" in jwk or "k" in jwk:
        raise ValueError("holds private or symmetric key material (public keys only)")
    if kty == "EC" and crv == "P-384":
        alg = "ES384"
    elif kty == "RSA":
        alg = "RS384"
    else:
        raise ValueError(f"unsupported key type {kty!r}/{crv!r} (ES384 on P-384 or RS384 on RSA only)")
    if jwk.get("alg", alg) != alg:
        raise ValueError(f"alg {jwk.get('alg')!r} is not allowed (ES384 or RS384 only)")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"use {jwk.get('use')!r} is not 'sig'")
    return alg


def usable_key(jwk: Mapping[str, Any]) -> PyJWK:
    """A verification key bound to its algorithm (so a token cannot pick another, e.g. HS384)."""
    alg = key_algorithm(jwk)
    try:
        key = PyJWK(dict(jwk), algorithm=alg)
    except (PyJWTError, TypeError, KeyError, ValueError) as exc:
        raise ValueError(f"not a valid {alg} key ({type(exc).__name__})") from None
    if alg == "RS384" and key.key.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA key of {key.key.key_size} bits (at least {MIN_RSA_BITS})")
    return key


def parse_jwks(data: Any, *, strict: bool) -> dict[str, PyJWK]:
    """``kid`` -> key. Strict (our own file): every key must be usable. Lenient (a fetched set):
    keys we cannot use (other algorithms, no kid, duplicates) are skipped."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError('a JWK Set is an object {"keys": [...]}')
    keys: dict[str, PyJWK] = {}
    for n, jwk in enumerate(data["keys"]):
        try:
            if not isinstance(jwk, dict):
                raise ValueError("is not an object")
            kid = jwk.get("kid")
            if not isinstance(kid, str) or not kid:
                raise ValueError("has no kid (CDS Hooks tokens name their key)")
            if kid in keys:
                raise ValueError(f"repeats kid {kid!r}")
            keys[kid] = usable_key(jwk)
        except ValueError as exc:
            if strict:
                raise ValueError(f"key {n}: {exc}") from None
    if not keys:
        raise ValueError("no usable key (ES384 on P-384 or RS384 on RSA)")
    return keys


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_jku(url: Any) -> str:
    if not isinstance(url, str) or not url:
        raise ValueError("jku must be a URL")
    parts = urlsplit(url)
    if not parts.hostname or parts.fragment or parts.username or parts.password:
        raise ValueError(f"jku {url!r} is not a plain absolute URL")
    if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
        raise ValueError(f"jku {url!r} must be https (plain http only on loopback)")
    return url


def check_fhir_servers(value: Any) -> tuple[Origin, ...]:
    """``fhirServers``: origins, https (plain http only on loopback, as for ``jku``)."""
    if not isinstance(value, list):
        raise ValueError("fhirServers must be an array of origins (https://host[:port])")
    origins = []
    for text in value:
        try:
            found = parse_origin(text)
        except UnsafeUrl as exc:
            raise ValueError(f"fhirServers entry {text!r} {exc}") from None
        if found.scheme != "https" and not _loopback(found.host):
            raise ValueError(f"fhirServers entry {text!r} must be https (plain http only on loopback)")
        origins.append(found)
    return tuple(origins)


class KeySource(Protocol):
    def key(self, kid: str) -> PyJWK | None: ...


class StaticKeys:
    """A JWK Set given inline in the clients file."""

    def __init__(self, keys: dict[str, PyJWK]) -> None:
        self._keys = keys

    def key(self, kid: str) -> PyJWK | None:
        return self._keys.get(kid)


class RemoteKeys:
    """A JWK Set fetched from its listed ``jku`` (requests, timeouts, no redirects), cached."""

    def __init__(
        self,
        url: str,
        session: requests.Session,
        *,
        ttl_s: float = 3600.0,
        refetch_cooldown_s: float = 30.0,
        max_stale_s: float = 86400.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._session = session
        self._ttl, self._cooldown, self._max_stale = ttl_s, refetch_cooldown_s, max_stale_s
        self._timeout = timeout_s
        self._clock = clock
        self._lock = threading.Lock()  # guards the fields below, never held while fetching
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # last success
        self._attempted_at: float | None = None  # last try, success or not
        self._flight: threading.Event | None = None  # set when the fetch in progress ends
        self._waiters = 0

    def key(self, kid: str) -> PyJWK | None:
        with self._lock:
            now = self._clock()
            self._expire_stale(now)  # a set too old to serve even an outage is not handed out
            found = self._keys.get(kid)
            fresh = self._fetched_at is not None and now - self._fetched_at < self._ttl
            if found is not None and fresh:
                return found
            flight = self._flight
            if flight is not None:  # someone is fetching: a usable key now beats a new one later
                if found is not None or self._waiters >= MAX_WAITERS:
                    return found
                self._waiters += 1
            elif self._attempted_at is not None and now - self._attempted_at < self._cooldown:
                return found  # tried recently (stale set or unknown kid): no fetch
            else:
                self._attempted_at = now
                self._flight = threading.Event()
        if flight is not None:
            flight.wait(2 * self._timeout + 1.0)
            with self._lock:
                self._waiters -= 1
                return self._keys.get(kid)
        self._refresh(now)
        with self._lock:
            return self._keys.get(kid)

    def _refresh(self, now: float) -> None:
        """Fetch (this thread is the one fetcher), store the result, then wake the waiters."""
        keys: dict[str, PyJWK] | None = None
        try:
            keys = parse_jwks(self._fetch(), strict=False)
            log.info("jwks_fetched", jku=self.url, keys=len(keys))
        except (requests.RequestException, urllib3.exceptions.HTTPError, ValueError) as exc:
            log.warning("jwks_fetch_failed", jku=self.url, error=type(exc).__name__, detail=str(exc)[:200])
        finally:
            with self._lock:
                if keys is not None:
                    self._keys, self._fetched_at = keys, now
                else:
                    self._expire_stale(now)
                flight, self._flight = self._flight, None
            if flight is not None:
                flight.set()

    def _expire_stale(self, now: float) -> None:
        if self._fetched_at is not None and now - self._fetched_at >= self._ttl + self._max_stale:
            self._keys = {}

    def _fetch(self) -> Any:
        deadline = time.monotonic() + self._timeout  # the real clock: this bounds real waiting
        with self._session.get(
            self.url,
            timeout=self._timeout,
            allow_redirects=False,
            stream=True,
            headers={"Accept": "application/jwk-set+json, application/json"},
        ) as response:
            if response.status_code != 200:
                raise ValueError(f"HTTP {response.status_code}")
            body = bytearray()
            while chunk := response.raw.read1(16384, decode_content=True):  # what has arrived
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError(f"key set over {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise ValueError(f"key set not received within {self._timeout:g} s")
        return orjson.loads(body)


@dataclass(frozen=True, slots=True)
class TrustedClient:
    iss: str
    keys: KeySource
    jku: str | None = None  # the only URL a token's jku header may name
    fhir_servers: tuple[Origin, ...] | None = None  # the fhirServer origins it may name (None: any public)


class TrustedClients:
    """Issuer -> its keys, from the clients file (validated whole when built)."""

    def __init__(self, clients: dict[str, TrustedClient]) -> None:
        self._clients = clients

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, iss: str) -> TrustedClient | None:
        return self._clients.get(iss)

    @classmethod
    def from_file(cls, path: Path, **remote: Any) -> TrustedClients:
        try:
            data = orjson.loads(path.read_bytes())
        except OSError as exc:
            raise ClientsError(f"{path}: cannot read ({exc.strerror})") from None
        except orjson.JSONDecodeError as exc:
            raise ClientsError(f"{path}: not JSON ({exc})") from None
        try:
            return cls.from_data(data, **remote)
        except ClientsError as exc:
            raise ClientsError(f"{path}: {exc}") from None

    @classmethod
    def from_data(
        cls, data: Any, *, session: requests.Session | None = None, **remote: Any
    ) -> TrustedClients:
        """``remote``: RemoteKeys options (ttl_s, refetch_cooldown_s, max_stale_s, timeout_s, clock)."""
        if not isinstance(data, dict) or set(data) != {"clients"} or not isinstance(data["clients"], list):
            raise ClientsError('expected {"clients": [...]} and nothing else')
        if not data["clients"]:
            raise ClientsError("no clients listed")
        session = session or requests.Session()
        clients: dict[str, TrustedClient] = {}
        for n, entry in enumerate(data["clients"]):
            where = f"clients[{n}]"
            if not isinstance(entry, dict):
                raise ClientsError(f"{where}: not an object")
            iss = entry.get("iss")
            if not isinstance(iss, str) or not iss.strip():
                raise ClientsError(f"{where}: iss must be a non-empty string")
            if problem := _tenant_clash(iss):
                raise ClientsError(f"{where}: {problem}")
            where = f"{where} ({iss})"
            if iss in clients:
                raise ClientsError(f"{where}: issuer listed twice")
            unknown = sorted(set(entry) - {"iss", "jwks", "jku", "fhirServers"})
            if unknown:
                raise ClientsError(
                    f"{where}: unknown field(s) {', '.join(unknown)} (iss, jwks, jku, fhirServers)"
                )
            if ("jwks" in entry) == ("jku" in entry):
                raise ClientsError(f"{where}: give exactly one of jwks (inline keys) or jku (their URL)")
            try:
                servers = check_fhir_servers(entry["fhirServers"]) if "fhirServers" in entry else None
                if "jwks" in entry:
                    keys: KeySource = StaticKeys(parse_jwks(entry["jwks"], strict=True))
                    clients[iss] = TrustedClient(iss, keys, fhir_servers=servers)
                else:
                    url = check_jku(entry["jku"])
                    keys = RemoteKeys(url, session, **remote)
                    clients[iss] = TrustedClient(iss, keys, jku=url, fhir_servers=servers)
            except ValueError as exc:
                raise ClientsError(f"{where}: {exc}") from None
        return cls(clients)


def _tenant_clash(iss: str) -> str | None:
    """Why ``iss`` could name another caller's tenant (``redflags.service.auth.tenants``), or None.

    A client's iss is its tenant on ``$evaluate`` and the first part of its CDS tenants: an iss
    spelling a static token's tenant (``token:NAME``) or the ``default`` one, or holding what
    joins a tenant's parts (``|`` before a fhirServer origin, a space before a site), would read
    and withdraw that other tenant's records.
    """
    if iss == "default" or iss.startswith("token:"):
        return "iss 'default' and 'token:...' name other callers' records (the default tenant, static tokens)"
    if "|" in iss or any(c.isspace() or not c.isprintable() for c in iss):
        return "iss must not hold '|', spaces or control characters (they join a tenant's parts)"
    return None
