"""What the service's engine processes host: the site's pipeline and, if kept, its state store.

The pool (``redflags.workers.pool``) runs processes; this module is what each of them is made
of (``start_engine``) and the functions that run there (``evaluate``, ``pipeline``).
"""

from __future__ import annotations

from pathlib import Path

import structlog

from engine.host import run_engine_here
from fhir_adapters.intake import Intake
from redflags import config
from redflags.pipeline import PatientResult, Pipeline
from redflags.service.http.limits import call_limits
from redflags.state.model import DEFAULT_TENANT
from redflags.state.sqlite_store import open_store
from redflags.stateful import Tracker
from redflags.workers.pool import EnginePool, quiet_gc

_pipeline: Pipeline | None = None  # in an engine process: its one pipeline
_tracker: Tracker | None = None  # ... and its state store, when the service keeps one


def pipeline() -> Pipeline:
    """The pipeline of this engine process (for the functions the pool runs)."""
    if _pipeline is None:
        raise RuntimeError("not in an engine process")
    return _pipeline


def evaluate(
    intake: Intake, now: int, *, what_if: bool = False, tenant: str = DEFAULT_TENANT
) -> list[PatientResult]:
    """Evaluate in this engine process: with the state store (history, ledger, outbox) if any.

    ``what_if``: the input holds what is not yet so (order-sign's draft orders), or is asked
    about another instant than the service's: history is read, nothing is remembered and no
    alert changes. ``tenant``: whose history and ledger (``redflags.service.auth.tenants``).
    """
    if _tracker is None:
        return pipeline().evaluate(intake, now)
    request = structlog.contextvars.get_contextvars().get("request_id")
    tracked = _tracker.evaluate(intake, now, actor=f"service:{request}", commit=not what_if, tenant=tenant)
    return [t.result for t in tracked]


def start_here(
    config_path: str | None, state: str | None = None, queue: bool = False, retention_days: int | None = None
) -> Pipeline:
    """Make this process an engine process (engine processes call it; benchmarks too).

    ``state``: the state store file; ``queue``: also queue deliveries (a FHIR server is set).
    """
    global _pipeline, _tracker
    run_engine_here()  # this process only evaluates, on this thread
    _pipeline = Pipeline.from_config(config.load(Path(config_path) if config_path else None))
    _pipeline.max_facts = call_limits().max_facts_per_patient  # redflags serve --max-facts-per-patient
    if state:
        retention = retention_days * 86_400 if retention_days else None
        _tracker = Tracker(_pipeline, open_store(state), actor="service", retention_s=retention, queue=queue)
    quiet_gc()
    return _pipeline


def start_engine(
    config_path: str | None, state: str | None, queue: bool, retention_days: int | None
) -> dict[str, object]:
    """The start of a pool's engine process: the fields of its ready line."""
    return {"rules": len(start_here(config_path, state, queue, retention_days).engine.metas)}


def engine_pool(
    processes: int,
    config_path: str | None,
    log_level: str,
    state: str | None = None,
    queue: bool = False,
    retention_days: int | None = None,
    deadline_s: float = 60.0,
) -> EnginePool:
    """``processes`` engine processes, each with the site's pipeline (and state store, if any)."""
    args = (config_path, state, queue, retention_days)
    return EnginePool(processes, start_engine, args, log_level, deadline_s=deadline_s)
