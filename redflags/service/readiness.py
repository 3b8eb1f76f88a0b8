"""``GET /readyz``: may a load balancer send calls here? The stores answer and an engine serves.

``/healthz`` says the process is alive and its engines serve; ``/readyz`` adds the stores: a
replica whose database is unreachable (or whose SQLite file was moved away) is taken out of
rotation until it is back, instead of answering every call 503. Each probe is one cheap query
per store, run off the event loop and bounded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from engine.logger import get_logger
from redflags import metrics
from redflags.service.http.outcome import outcome

log = get_logger("redflags.service.readiness")

router = APIRouter(tags=["operations"])

#: Seconds a store has to answer its ping (then it counts as unreachable).
PING_S = 5.0


async def _store_problem(name: str, store: Any) -> str | None:
    """Why the store cannot serve (None: it can); its message names the file, never data."""
    if store is None:
        return None
    try:
        async with asyncio.timeout(PING_S):
            await to_thread.run_sync(store.ping)
    except TimeoutError:
        problem = f"{name} store: no answer within {PING_S:g} s"
    except Exception as exc:  # StateStoreError, FeedbackStoreError, a driver's own error
        problem = f"{name} store: {' '.join(str(exc).split()) or type(exc).__name__}"
    else:
        return None
    metrics.store_error(name)
    return problem


@router.get("/readyz", summary="Readiness: stores reachable and an engine process serving (503 if not)")
async def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    engines = state.engines.health()
    problems = [
        p
        for p in [
            await _store_problem("state", getattr(state, "state_store", None)),
            await _store_problem("feedback", getattr(state, "feedback_store", None)),
        ]
        if p
    ]
    if not engines["ready"]:
        problems.append(
            f"engine processes not serving: {engines['alive']} of {engines['processes']} alive, "
            f"{engines['stuck']} stuck, saturated: {engines['saturated']}"
        )
    if not problems:
        return JSONResponse({"status": "ok", "engines": engines})
    log.warning("not_ready", problems=problems)
    body = outcome("; ".join(problems), "transient")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})
