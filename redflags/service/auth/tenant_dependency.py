"""FastAPI dependencies naming the tenant of a call (the model is in ``redflags.service.auth.tenants``)."""

from __future__ import annotations

from fastapi import Depends, Request

from redflags.service.auth.callers import Authenticator, bearer, cds_client, engine_client
from redflags.state.model import DEFAULT_TENANT


def _auth(request: Request) -> Authenticator:
    return request.app.state.auth


async def cds_principal(request: Request, client: str = Depends(cds_client)) -> str:
    """Dependency for CDS Hooks calls: the tenant's client part (the verified JWT ``iss``)."""
    return DEFAULT_TENANT if _auth(request).allow_unauthenticated else client


async def evaluate_tenant(request: Request, client: str = Depends(engine_client)) -> str:
    """Dependency for ``$evaluate``: the tenant of an authenticated caller.

    ``engine_client`` says who the caller is, not by which means: a static token is told from
    a JWT issuer by matching the token again (constant time, as ``engine_client`` did).
    """
    auth = _auth(request)
    if auth.allow_unauthenticated:
        return DEFAULT_TENANT
    token = bearer(request)
    if auth.tokens is not None and token is not None and auth.tokens.match(token) is not None:
        return f"token:{client}"
    return client
