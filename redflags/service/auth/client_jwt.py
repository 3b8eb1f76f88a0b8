"""Verify a CDS client's JWT as CDS Hooks 2.0 "Trusting CDS Clients" requires.

Header: ``alg`` ES384 or RS384 only (``none``, every HMAC and anything else refused), ``kid``,
``typ`` JWT; ``jku``, when present, must be the URL listed for the issuer (a client with an
inline key set never has anything fetched: its keys are the listed ones whatever the token
says). Claims: ``iss`` a trusted issuer, ``aud`` the URL of the endpoint called, ``exp``,
``iat``, ``jti`` all required; ``jti`` may be used once. Clock leeway: ``LEEWAY_S`` either way
on ``exp``/``iat``/``nbf`` (EHR and service clocks drift). Lifetime: ``exp - iat`` at most
``max_lifetime_s`` (five minutes by default, as CDS Hooks tokens live) and ``iat`` no older
than that: a token minted to live for years (or with ``iat`` 0) would stay replayable that
long, and its ``jti`` would have to be remembered that long.

The signature is checked with the issuer's key *bound to its algorithm* (PyJWK), so a token
cannot choose e.g. HS384 with the public key as the shared secret. The id is recorded only
after everything else passed, so an invalid token cannot burn a valid token's ``jti``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
from jwt.exceptions import PyJWTError

from redflags.service.auth.trusted_clients import ALGORITHMS, TrustedClients
from redflags.state.jti import JtiStore

LEEWAY_S = 60
MAX_LIFETIME_S = 300
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")


class Refused(Exception):
    """Authentication failed; ``reason`` is for the server log only, never for the caller."""

    def __init__(self, reason: str, iss: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.iss = iss


class ClientVerifier:
    def __init__(
        self,
        clients: TrustedClients,
        jti_store: JtiStore,
        *,
        leeway_s: int = LEEWAY_S,
        verify_exp: bool = True,  # off (every time check) only for the specification's 2015 example
        max_lifetime_s: int = MAX_LIFETIME_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clients = clients
        self._jti = jti_store
        self._leeway = leeway_s
        self._verify_exp = verify_exp
        self._max_lifetime = max_lifetime_s
        self._clock = clock

    def verify(self, token: str, audience: str | Sequence[str]) -> str:
        """The verified issuer (``iss``), or Refused. Blocking: may fetch a key set."""
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            raise Refused("malformed") from None
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if alg not in ALGORITHMS:
            raise Refused("algorithm")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise Refused("typ")
        if not isinstance(kid, str) or not kid:
            raise Refused("kid missing")
        iss = unverified.get("iss")
        client = self.clients.get(iss) if isinstance(iss, str) else None
        if client is None:
            raise Refused("unknown issuer", iss=str(iss)[:200] if iss is not None else None)
        if client.jku is not None and "jku" in header and header["jku"] != client.jku:
            raise Refused("jku not listed for issuer", iss=iss)
        key = client.keys.key(kid)
        if key is None:
            raise Refused("unknown kid", iss=iss)
        claims = self._decode(token, key, alg, audience, iss)
        if self._verify_exp:
            self._check_lifetime(claims, iss)
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise Refused("jti", iss=iss)
        if not self._jti.first_use(iss, jti, float(claims["exp"]) + self._leeway):
            raise Refused("replayed jti", iss=iss)
        return iss

    def _check_lifetime(self, claims: dict[str, Any], iss: str) -> None:
        """``iat`` and ``exp`` numbers, ``exp - iat`` within the limit, ``iat`` recent (its
        future side, beyond the leeway, PyJWT refuses)."""
        iat, exp = claims["iat"], claims["exp"]
        for value in (iat, exp):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise Refused("iat/exp not numbers", iss=iss)
        if exp - iat > self._max_lifetime:
            raise Refused("lifetime over the limit", iss=iss)
        if iat < self._clock() - self._max_lifetime - self._leeway:
            raise Refused("iat too old", iss=iss)

    def _decode(
        self, token: str, key: jwt.PyJWK, alg: str, audience: str | Sequence[str], iss: str
    ) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=iss,
                leeway=self._leeway,
                options={"require": list(REQUIRED_CLAIMS), "verify_exp": self._verify_exp},
            )
        except jwt.InvalidSignatureError:
            raise Refused("signature", iss=iss) from None
        except jwt.ExpiredSignatureError:
            raise Refused("expired", iss=iss) from None
        except jwt.InvalidAudienceError:
            raise Refused("audience", iss=iss) from None
        except jwt.MissingRequiredClaimError as exc:
            raise Refused(f"missing claim {exc.claim}", iss=iss) from None
        except PyJWTError as exc:
            raise Refused(type(exc).__name__, iss=iss) from None
