"""Who may call: CDS clients by signed JWT (CDS Hooks 2.0), integration engines by bearer token.

``cds_client`` (CDS Hooks endpoints) wants ``Authorization: Bearer <JWT>`` from a client in
``--clients``; ``engine_client`` (``$evaluate``) also takes a static token from ``--tokens``.
Every failure is the same 401 (``WWW-Authenticate: Bearer``, an OperationOutcome with one fixed
text, ``redflags.service.http.errors``): the caller learns nothing; the reason goes to the server
log, the token never.

The JWT ``aud`` must equal the URL of the endpoint called: a ``--public-url`` (repeatable) +
the request path. It is never built from the request's ``Host`` header: a caller sets that, so
a token issued for another service (its ``aud`` that service's URL) would pass by sending that
service's host. Trusted clients therefore need ``--public-url`` (``redflags serve`` refuses to
start without it). With ``--allow-unauthenticated`` every caller is accepted and credentials are
not looked at (``redflags serve`` logs a warning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from anyio import to_thread
from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from engine.logger import get_logger
from redflags import metrics
from redflags.service.auth.client_jwt import ClientVerifier, Refused
from redflags.service.auth.static_tokens import TOKEN_RE, StaticTokens, TokensError
from redflags.service.auth.trusted_clients import ClientsError, TrustedClients
from redflags.service.http.errors import UNAUTHORIZED
from redflags.service.settings import ServiceSettings
from redflags.state.jti import JtiStoreError
from redflags.state.model import StoreUnavailable
from redflags.state.stores import UnsupportedLocation, open_jti

log = get_logger("redflags.service.auth")

#: OpenAPI security schemes, declared by ``cds_client``/``engine_client`` (the ``_`` parameters) so
#: Swagger UI's "Authorize" sends a token; they never refuse anything themselves.
CDS_CLIENT_JWT = HTTPBearer(
    scheme_name="cdsClientJWT",
    bearerFormat="JWT",
    description="CDS Hooks 2.0 client JWT (ES384/RS384) of a client in `serve --clients`, its `aud` "
    "the URL called: `redflags token --key KEY --iss ISS --aud <public URL><path>`; used once.",
    auto_error=False,
)
STATIC_TOKEN = HTTPBearer(
    scheme_name="staticToken",
    description="A static token of `serve --tokens` (server-to-server `$evaluate` only).",
    auto_error=False,
)

MAX_TOKEN_CHARS = 16 * 1024
NO_PUBLIC_URL = (
    "--clients needs --public-url (the URL CDS clients call, the JWT audience): "
    "it is never taken from the Host header a caller sends"
)


class AuthSetupError(ValueError):
    """The clients or tokens file, or the replay store, is unusable (one line, no secrets)."""


@dataclass(frozen=True, slots=True)
class Authenticator:
    """What this process accepts; built once per worker by ``create_app``."""

    allow_unauthenticated: bool = False
    verifier: ClientVerifier | None = None
    tokens: StaticTokens | None = None
    public_urls: tuple[str, ...] = ()  # the base URLs a JWT aud may name

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> Authenticator:
        """Loads (and so validates) the clients and tokens files and opens the replay store;
        ``redflags serve`` calls it before starting so a mistake ends it with one line."""
        if settings.allow_unauthenticated:
            return cls(allow_unauthenticated=True)
        clients_path, tokens_path = settings.path("clients"), settings.path("tokens")
        urls = settings.accepted_urls()
        if clients_path and not urls:
            raise AuthSetupError(NO_PUBLIC_URL)
        for url in urls:
            if problem := public_url_problem(url):
                raise AuthSetupError(f"public URL {url!r}: {problem}")
        try:
            verifier = None
            if clients_path:
                clients = TrustedClients.from_file(clients_path)
                if not settings.jti_db:  # never guessed: every worker must name the same file
                    raise AuthSetupError("--clients needs a jti store (settings.jti_db), none named")
                store = open_jti(settings.jti_db)
                verifier = ClientVerifier(clients, store, max_lifetime_s=settings.max_token_lifetime_s)
            tokens = StaticTokens.from_file(tokens_path) if tokens_path else None
        except (ClientsError, TokensError) as exc:
            raise AuthSetupError(str(exc)) from None
        except (JtiStoreError, UnsupportedLocation) as exc:
            raise AuthSetupError(str(exc)) from None
        return cls(verifier=verifier, tokens=tokens, public_urls=urls)


def public_url_problem(url: str) -> str | None:
    """Why URL cannot be a public base URL (the JWT audience), or None."""
    if "\\" in url or any(c.isspace() or not c.isprintable() for c in url):
        return "spaces, backslashes and control characters are not allowed"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        return "not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an absolute http(s) URL"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "a base URL has no query, fragment or user"
    return None


def audience(request: Request, public_urls: tuple[str, ...]) -> list[str]:
    """The URLs of the endpoint called, one per configured base URL (never the Host header)."""
    return [base + request.url.path for base in public_urls]


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or len(token) > MAX_TOKEN_CHARS or not TOKEN_RE.fullmatch(token):
        return None
    return token


def _auth(request: Request) -> Authenticator:
    return request.app.state.auth


def _refuse(request: Request, reason: str, iss: str | None = None) -> HTTPException:
    log.warning("auth_refused", reason=reason, iss=iss, path=request.url.path)
    return HTTPException(status_code=401, detail=UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


async def _verified_client(request: Request, auth: Authenticator, token: str) -> str:
    assert auth.verifier is not None
    try:  # off the event loop: the first call for an issuer may fetch its key set
        return await to_thread.run_sync(auth.verifier.verify, token, audience(request, auth.public_urls))
    except Refused as exc:
        raise _refuse(request, exc.reason, exc.iss) from None
    except StoreUnavailable:  # the jti store's database is down: 503 (catch_all), not the caller's fault
        metrics.store_error("jti")
        raise
    except Exception as exc:  # fail closed; the message could quote token parts, so type only
        raise _refuse(request, f"error {type(exc).__name__}") from None


async def cds_client(
    request: Request,
    _declared: Annotated[HTTPAuthorizationCredentials | None, Security(CDS_CLIENT_JWT)] = None,
) -> str:
    """FastAPI dependency for CDS Hooks endpoints: the verified client (JWT ``iss``)."""
    auth = _auth(request)
    if auth.allow_unauthenticated:
        return "unauthenticated"
    token = bearer(request)
    if token is None:
        raise _refuse(request, "no bearer token")
    if auth.verifier is None:
        raise _refuse(request, "no trusted clients configured")
    return await _verified_client(request, auth, token)


async def engine_client(
    request: Request,
    _jwt: Annotated[HTTPAuthorizationCredentials | None, Security(CDS_CLIENT_JWT)] = None,
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(STATIC_TOKEN)] = None,
) -> str:
    """FastAPI dependency for ``$evaluate``: a CDS client's JWT or a static bearer token
    (``token-line-N``: the line of the tokens file, never the token)."""
    auth = _auth(request)
    if auth.allow_unauthenticated:
        return "unauthenticated"
    token = bearer(request)
    if token is None:
        raise _refuse(request, "no bearer token")
    if auth.tokens is not None and (label := auth.tokens.match(token)) is not None:
        return label
    if auth.verifier is None or token.count(".") != 2:
        raise _refuse(request, "unknown token")
    return await _verified_client(request, auth, token)
