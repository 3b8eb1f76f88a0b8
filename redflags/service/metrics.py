"""``GET /metrics``: the Prometheus text of every process of this ``serve``, and the request counts.

The counters and histograms of the HTTP process and of every engine process are summed from
the run's metric folder (``redflags.metrics``: prometheus-client's multi-process mode). The
gauges are read when scraped: outbox items by status and the age of the oldest pending one
(two indexed queries), and the engine processes from the pool. Nothing here names a patient,
tenant, client or token (docs/security.md): /metrics may be left open; ``--metrics-token``
closes it to all but ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Iterator
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.logger import get_logger
from redflags import metrics
from redflags.service.cds.services import SERVICES
from redflags.service.http.outcome import outcome_response
from redflags.state.model import StateStore, StateStoreError

log = get_logger("redflags.service.metrics")

router = APIRouter(tags=["operations"])

#: Methods named in labels; any other is "other" (a label per invented method would grow forever).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The route label of a request no route matched (its raw path may hold anything).
UNMATCHED = "unmatched"
#: The CDS service call's route template (``redflags.service.cds.routes``).
CDS_CALL = "/cds-services/{service_id}"
#: Seconds a scrape may spend reading the store before it answers without the outbox gauges.
STORE_READ_S = 5.0


class RequestMetrics:
    """Pure ASGI middleware: each answer counted by method, route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not metrics.enabled():
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered: int | None = None

        async def watched(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and answered is None:
                answered = message["status"]
                _count(scope, answered, time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            if answered is None:  # failed before answering: the server answers 500
                _count(scope, 500, time.perf_counter() - started)


def _count(scope: Scope, status: int, seconds: float) -> None:
    method = scope["method"] if scope["method"] in METHODS else "other"
    route = getattr(scope.get("route"), "path", None) or UNMATCHED
    metrics.http_answer(method, route, status, seconds)
    if route == CDS_CALL and method == "POST":
        service = SERVICES.get(scope.get("path_params", {}).get("service_id", ""))
        if service is not None:  # an unknown id is a 404, counted above only
            metrics.cds_call(service.id, service.hook, status, seconds)


def authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


@router.get("/metrics", summary="Prometheus metrics of every process of this service (text format)")
async def scrape(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token and not authorized(request.headers.get("authorization"), token):
        answer: JSONResponse = outcome_response(401, "/metrics needs its bearer token", "login", path="/")
        answer.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return answer
    from prometheus_client import CONTENT_TYPE_LATEST

    gauges = await _gauges(request.app.state)
    body = await to_thread.run_sync(_render, gauges)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def _gauges(state: Any) -> list[Any]:
    """The scrape-time gauges: engines from the pool, the outbox from the store (bounded)."""
    from prometheus_client.core import GaugeMetricFamily

    engines = state.engines.health()
    family = GaugeMetricFamily("redflags_engine_processes", "Engine processes by state.", labels=["state"])
    for name in ("processes", "alive", "busy", "stuck", "waiting"):
        family.add_metric([name], float(engines[name]))
    found: list[Any] = [family]
    store: StateStore | None = getattr(state, "state_store", None)
    if store is not None:
        try:
            async with asyncio.timeout(STORE_READ_S):
                found += await to_thread.run_sync(_outbox, store)
        except (StateStoreError, TimeoutError) as exc:
            metrics.store_error("state")
            log.warning("metrics_store_unreadable", error=type(exc).__name__)
    return found


def _outbox(store: StateStore) -> list[Any]:
    from prometheus_client.core import GaugeMetricFamily

    items = GaugeMetricFamily("redflags_outbox_items", "Outbox items by status.", labels=["status"])
    for status, n in store.counts().items():
        items.add_metric([status], float(n))
    oldest = store.oldest_pending()
    age = GaugeMetricFamily(
        "redflags_outbox_oldest_pending_age_seconds",
        "Age of the oldest pending outbox item (0: none pending).",
        value=max(0.0, time.time() - oldest) if oldest is not None else 0.0,
    )
    return [items, age]


class _Fixed:
    """A collector of families read already (the store was read off the event loop)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


def _render(gauges: list[Any]) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    if folder := metrics.folder():
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=folder)
    registry.register(_Fixed(gauges))  # type: ignore[arg-type]  # a Collector by its collect()
    return generate_latest(registry)
