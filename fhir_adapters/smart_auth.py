"""SMART Backend Services: server-to-server access tokens from a signed client assertion.

The client proves who it is with a short-lived JWT signed by its private key (RS384 or
ES384; the server holds the public key), exchanged at the token endpoint for an access token
(client-credentials grant). The token is reused until shortly before it expires, and dropped
when the FHIR server answers 401, so the next call gets a new one.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import jwt
import orjson
import requests

from fhir_adapters.fhir_client import Auth, BearerToken, FhirPermanentError, FhirTransientError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
DEFAULT_SCOPE = "system/Flag.write system/CarePlan.write system/Device.write"
#: Lifetime of a client assertion (the specification allows at most five minutes).
ASSERTION_LIFETIME_S = 300
#: A token is renewed this long before it expires.
RENEW_MARGIN_S = 30


class SmartBackendAuth:
    def __init__(
        self,
        token_url: str,
        client_id: str,
        private_key_pem: bytes | str,
        kid: str,
        alg: str = "RS384",
        scope: str = DEFAULT_SCOPE,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if alg not in ALGORITHMS:
            raise ValueError(f"SMART Backend Services signs with {' or '.join(ALGORITHMS)}, not {alg}")
        self.token_url = token_url
        self.client_id = client_id
        self.kid = kid
        self.alg = alg
        self.scope = scope
        self.timeout_s = timeout_s
        self._key = private_key_pem
        self._clock = clock
        self._token: tuple[str, float] | None = None  # (access token, expiry)
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: Path) -> SmartBackendAuth:
        """From a JSON file: ``token_url``, ``client_id``, ``private_key`` (a PEM file, relative
        to the JSON file), ``kid``, and optionally ``alg`` and ``scope``. ValueError if wrong."""
        try:
            doc = orjson.loads(path.read_bytes())
            key = (path.parent / doc["private_key"]).read_bytes()
            return cls(
                doc["token_url"],
                doc["client_id"],
                key,
                doc["kid"],
                alg=doc.get("alg", "RS384"),
                scope=doc.get("scope", DEFAULT_SCOPE),
            )
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"{path}: not a SMART backend configuration ({type(exc).__name__}: {exc})"
            ) from None

    def __repr__(self) -> str:
        return f"SmartBackendAuth(client_id={self.client_id!r}, kid={self.kid!r}, alg={self.alg})"

    def headers(self, session: requests.Session) -> dict[str, str]:
        with self._lock:
            if self._token is None or self._clock() >= self._token[1] - RENEW_MARGIN_S:
                self._token = self._fetch(session)
            return {"Authorization": f"Bearer {self._token[0]}"}

    def refresh(self) -> bool:
        with self._lock:
            self._token = None
        return True

    def assertion(self) -> str:
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "exp": now + ASSERTION_LIFETIME_S,
            "iat": now,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm=self.alg, headers={"kid": self.kid, "typ": "JWT"})

    def _fetch(self, session: requests.Session) -> tuple[str, float]:
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        where = "POST token endpoint"
        try:
            answer = session.post(
                self.token_url,
                data=form,
                headers={"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"},
                timeout=self.timeout_s,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise FhirTransientError(f"{where}: cannot get a token ({type(exc).__name__})") from None
        if answer.status_code >= 500 or answer.status_code == 429:
            raise FhirTransientError(f"{where}: HTTP {answer.status_code}", answer.status_code)
        try:
            doc = orjson.loads(answer.content)
        except orjson.JSONDecodeError:
            doc = {}
        if answer.status_code >= 300 or not isinstance(doc.get("access_token"), str):
            error = doc.get("error", "no access_token") if isinstance(doc, dict) else "not JSON"
            raise FhirPermanentError(f"{where}: HTTP {answer.status_code} ({error})", answer.status_code)
        lifetime = doc.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, int | float) and lifetime > 0 else 300.0
        return doc["access_token"], self._clock() + lifetime


def server_auth(token: str | None, smart: Path | None) -> Auth | None:
    """The credentials for a FHIR server: a static bearer token, SMART Backend Services (its
    configuration file), or none. ValueError when both are given or the file is wrong."""
    if token and smart:
        raise ValueError("give a bearer token or a SMART configuration, not both")
    if smart:
        return SmartBackendAuth.from_file(smart)
    return BearerToken(token) if token else None
