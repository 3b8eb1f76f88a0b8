"""The ASGI application: HTTP here, evaluations in the engine processes, request ids in every log line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from engine.logger import get_logger
from redflags import logs
from redflags.delivery.outbox_loop import OutboxWorker
from redflags.service.auth.callers import Authenticator
from redflags.service.cds import feedback
from redflags.service.cds import routes as cds
from redflags.service.cds.card_writer import CardWriter
from redflags.service.engine_host import engine_pool
from redflags.service.evaluate import routes as fhir_evaluate
from redflags.service.http import api_docs
from redflags.service.http import errors as http_errors
from redflags.service.http.body import BodyReadDeadline
from redflags.service.http.catch_all import CatchAll
from redflags.service.http.limits import BodySizeLimit
from redflags.service.http.request_log import RequestLog
from redflags.service.metrics import RequestMetrics
from redflags.service.metrics import router as metrics_route
from redflags.service.readiness import router as readiness
from redflags.service.settings import ServiceSettings
from redflags.service.sites import SitePrefix
from redflags.state.stores import open_state
from redflags.workers.pool import quiet_gc
from rulesets import RULES

log = get_logger("redflags.service")


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    settings = settings or ServiceSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engines = engine_pool(
            settings.engine_processes,
            settings.config,
            settings.log_level,
            state=settings.state,
            queue=bool(settings.fhir_server),
            retention_days=settings.retention_days,
            deadline_s=settings.call_deadline_s,
            site_configs=settings.sites,
        )
        app.state.feedback_store = feedback.open_store(settings)
        app.state.card_writer = CardWriter(app.state.feedback_store)  # the cards shown, one writer task
        # this process's own handle: /readyz pings it, /metrics reads the outbox's counts
        app.state.state_store = open_state(settings.state) if settings.state else None
        outbox = OutboxWorker.start(settings)
        try:
            await app.state.engines.start()
            app.state.card_writer.start()
            quiet_gc()
            log.info("service_ready", rules=len(RULES), engine_processes=settings.engine_processes)
            yield
        finally:
            if outbox is not None:  # bounded: a delivery in progress is abandoned (it stays pending)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(outbox.stop(), settings.shutdown_grace_s)
            await app.state.card_writer.close()  # every card queued is written before the store closes
            app.state.feedback_store.close()
            if app.state.state_store is not None:
                app.state.state_store.close()
            await app.state.engines.close()

    app = FastAPI(
        title="redflags",
        version=version("redflags"),
        description="Red flags of leg weakness: CDS Hooks 2.0 services and a FHIR $evaluate operation.",
        lifespan=lifespan,
        docs_url=None,  # api_docs serves /docs and /redoc from the package, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)  # innermost: 413s get logged
    app.add_middleware(BodyReadDeadline, seconds=settings.body_timeout_s)  # 408 for a dribbled body
    app.add_middleware(CatchAll)  # outside both: an error no endpoint answered becomes JSON
    app.state.auth = Authenticator.from_settings(settings)  # trusted clients, tokens, replay store
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )

    app.add_middleware(RequestMetrics)  # every answer counted, by route template (the site's prefix removed)
    # /sites/{name}/...: the request's site, then the ordinary routes (redflags.service.sites)
    app.add_middleware(
        SitePrefix, sites=tuple(settings.sites), unprefixed=not settings.sites or bool(settings.config)
    )
    app.add_middleware(RequestLog)  # outermost: every answer, CORS and 413 included, is logged

    app.router.routes.insert(0, cds.call_route)  # served here; cds.router documents it
    app.include_router(cds.router)
    app.include_router(feedback.router)

    @app.get("/healthz", tags=["operations"])
    async def healthz(request: Request) -> JSONResponse:
        """200 while the engine processes serve; 503 when one is dead, stuck or all stay busy."""
        engines = request.app.state.engines.health()
        body = {
            "status": "ok" if engines["ready"] else "unavailable",
            "version": version("redflags"),
            "rules": sorted(RULES),
            "engines": engines,
        }
        return JSONResponse(body, status_code=200 if engines["ready"] else 503)

    app.include_router(readiness)  # /readyz: stores reachable, engines serving
    app.include_router(metrics_route)  # /metrics: Prometheus text, every process

    app.include_router(fhir_evaluate.router)
    http_errors.install(app)  # 401/404/405 as OperationOutcomes, not {"detail": ...}
    api_docs.install(app)
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``redflags serve`` passes settings in the env)."""
    settings = ServiceSettings.from_env()
    logs.configure(settings.log_level)
    return create_app(settings)
