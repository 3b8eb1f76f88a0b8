"""What the service's engine processes host: the site's pipeline (with its state store, if kept).

The pool (``redflags.workers.pool``) runs processes; this module is what each of them is made
of (``start_engine``) and how work reaches the pipeline there: ``call(engines, fn, *args)``
runs ``fn(pipeline, *args)`` in an engine process, so the CDS answer and ``$evaluate`` are
handed the pipeline (its ``evaluate`` and its rules' metadata) instead of looking it up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from engine.host import run_engine_here
from engine.logger import bound_contextvars, get_contextvars
from fhir_adapters.facts_cache import FactsCache
from redflags import config, metrics
from redflags.pipeline import Pipeline
from redflags.service import sites
from redflags.service.http.limits import call_limits
from redflags.state import call_deadline
from redflags.state.stores import open_state
from redflags.stateful import Memory
from redflags.workers.pool import EnginePool, quiet_gc

P = ParamSpec("P")
T = TypeVar("T")

_pipeline: Pipeline | None = None  # in an engine process: its pipeline (--config)
_pipelines: dict[str, Pipeline] = {}  # ... and each --site's, by name (redflags.service.sites)


def hosted(fn: Callable[Concatenate[Pipeline, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` with this engine process's pipeline (what the pool runs for ``call``)."""
    if _pipeline is None:
        raise RuntimeError("not in an engine process")
    with metrics.evaluation(fn.__name__):  # evaluation time, summed with the other processes'
        return fn(_pipeline, *args, **kwargs)


def hosted_at(site: str, fn: Callable[Concatenate[Pipeline, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` with this engine process's pipeline of ``site`` (its log lines name the site)."""
    pipeline = _pipelines.get(site)
    if pipeline is None:
        raise RuntimeError(f"this engine process serves no site {site!r}")
    with bound_contextvars(site=site):
        return fn(pipeline, *args, **kwargs)


async def call(engines: EnginePool, fn: Callable[Concatenate[Pipeline, P], T], *args: object) -> T:
    """``fn(pipeline, *args)`` in the next free engine process (one crossing), with the pipeline
    of the request's site (``sites.current``; none: the ``--config`` one)."""
    site = sites.current()
    deadline = time.monotonic() + engines.deadline_s  # no later than the pool's own
    if site is None:
        return await engines.run(_until, deadline, hosted, fn, *args)
    return await engines.run(_until, deadline, hosted_at, site, fn, *args)


def _until(deadline: float, host: Callable[..., T], *args: object) -> T:
    """``host(*args)`` with the store's waits bounded by the call's deadline (``call_deadline``)."""
    with call_deadline.until(deadline):
        return host(*args)


def actor() -> str:
    """Who the ledger names for this evaluation: the service and the request's id."""
    return f"service:{get_contextvars().get('request_id')}"


def start_here(
    config_path: str | None,
    state: str | None = None,
    queue: bool = False,
    retention_days: int | None = None,
    site_configs: Mapping[str, str] | None = None,
) -> Pipeline:
    """Make this process an engine process (engine processes call it; benchmarks too).

    ``state``: the state store file; ``queue``: also queue deliveries (a FHIR server is set);
    ``site_configs``: each ``--site``'s configuration file, by name, compiled in this process too.
    """
    global _pipeline
    run_engine_here()  # this process only evaluates, on this thread
    retention = retention_days * 86_400 if retention_days else None
    memory = partial(_memory, state, retention, queue) if state else None
    _pipeline = Pipeline.from_config(
        config.load(Path(config_path) if config_path else None),
        max_facts=call_limits().max_facts_per_patient,  # redflags serve --max-facts-per-patient
        memory=memory,
        facts_cache=FactsCache(),  # a CDS client resends the prefetch: map only what changed
    )
    for name, path in (site_configs or {}).items():
        _pipelines[name] = Pipeline.from_config(
            config.load(Path(path)),
            max_facts=call_limits().max_facts_per_patient,
            memory=partial(_site_memory, name, state, retention, queue) if state else None,
            facts_cache=FactsCache(),  # its own: a site's value sets make its own facts
        )
    quiet_gc()
    return _pipeline


def _memory(state: str, retention_s: int | None, queue: bool) -> Memory:
    return Memory(open_state(state), actor="service", retention_s=retention_s, queue=queue)


def _site_memory(site: str, state: str, retention_s: int | None, queue: bool) -> Memory:
    return sites.SiteMemory(open_state(state), site, actor="service", retention_s=retention_s, queue=queue)


def start_engine(
    config_path: str | None,
    state: str | None,
    queue: bool,
    retention_days: int | None,
    site_configs: Mapping[str, str] | None = None,
) -> dict[str, object]:
    """The start of a pool's engine process: the fields of its ready line."""
    rules = len(start_here(config_path, state, queue, retention_days, site_configs).rules)
    return {"rules": rules, "sites": len(site_configs or {})}


def engine_pool(
    processes: int,
    config_path: str | None,
    log_level: str,
    state: str | None = None,
    queue: bool = False,
    retention_days: int | None = None,
    deadline_s: float = 60.0,
    start: Callable[..., object] | None = None,
    site_configs: Mapping[str, str] | None = None,
) -> EnginePool:
    """``processes`` engine processes, each with the site's pipeline (and state store, if any).

    ``start``: what each engine process runs first (default ``start_engine``; tests wrap it);
    ``site_configs``: every ``--site`` (each process hosts all of them).
    """
    args: tuple[object, ...] = (config_path, state, queue, retention_days)
    if site_configs:  # only then: a wrapping ``start`` of the four arguments keeps working
        args += (dict(site_configs),)
    return EnginePool(processes, start or start_engine, args, log_level, deadline_s=deadline_s)
