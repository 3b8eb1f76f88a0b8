"""What redflags counts for operators (``GET /metrics``), in whichever process it happens.

The service is several processes: the HTTP one (requests, the pool, the outbox) and the engine
processes (evaluations, alert transitions). prometheus-client's multi-process mode lets each
write its samples to files in one folder that the HTTP process sums at scrape time
(``redflags.service.metrics``). ``redflags serve`` makes that folder for each run and names it in
``$REDFLAGS_METRICS_DIR`` before any engine process starts (they inherit it); without it (replay,
the CLI, tests that build the app in-process) every function here does nothing and
prometheus-client is not even imported.

Labels are bounded and never carry data: route templates, CDS service ids and hooks, rule ids,
tiers, statuses, reasons. Never a patient, tenant, client, token or raw path.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: The folder of this run's metric files; set by ``redflags serve`` (see the module docstring).
DIR_ENV = "REDFLAGS_METRICS_DIR"
#: prometheus-client reads its folder from here, once, when it is first imported.
PROMETHEUS_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Latency buckets (seconds): a CDS call is answered in tens of milliseconds, a deadline is 60 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True, slots=True)
class _Metrics:
    requests: Any
    latency: Any
    cds_calls: Any
    cds_latency: Any
    evaluations: Any
    transitions: Any
    restarts: Any
    deadline_kills: Any
    busy: Any
    deliveries: Any
    fhir_retries: Any
    store_errors: Any


def enable(folder: str) -> None:
    """Record from now on into ``folder`` (this process and the processes it starts later)."""
    os.environ[DIR_ENV] = folder
    os.environ[PROMETHEUS_ENV] = folder
    _metrics.cache_clear()


@functools.cache
def _metrics() -> _Metrics | None:
    folder = os.environ.get(DIR_ENV)
    if not folder:
        return None
    os.environ[PROMETHEUS_ENV] = folder  # before the import below: it picks the value class then
    from prometheus_client import Counter, Histogram, values

    if values.ValueClass is values.MutexValue:
        values.ValueClass = values.MultiProcessValue()  # imported before the folder was set
    none: tuple[()] = ()
    return _Metrics(
        requests=Counter(
            "redflags_http_requests", "HTTP answers by route template and status.",
            ["method", "route", "status"], registry=None,
        ),
        latency=Histogram(
            "redflags_http_request_duration_seconds", "Time to the answer's headers, by route template.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=None,
        ),
        cds_calls=Counter(
            "redflags_cds_calls", "CDS Hooks service calls by service, hook and status.",
            ["service", "hook", "status"], registry=None,
        ),
        cds_latency=Histogram(
            "redflags_cds_call_duration_seconds", "CDS Hooks call time by service and hook.",
            ["service", "hook"], buckets=LATENCY_BUCKETS, registry=None,
        ),
        evaluations=Histogram(
            "redflags_evaluation_seconds", "Time of one call's work in an engine process.",
            ["call"], buckets=LATENCY_BUCKETS, registry=None,
        ),
        transitions=Counter(
            "redflags_alert_transitions", "Alerts raised, updated and withdrawn, by rule and tier.",
            ["rule", "tier", "change"], registry=None,
        ),
        restarts=Counter(
            "redflags_engine_restarts", "Engine processes replaced, by why.", ["reason"], registry=None
        ),
        deadline_kills=Counter(
            "redflags_engine_deadline_kills", "Engine processes killed for overrunning the call deadline.",
            none, registry=None,
        ),
        busy=Counter(
            "redflags_engine_busy", "Calls refused because every engine stayed busy for the deadline.",
            none, registry=None,
        ),
        deliveries=Counter(
            "redflags_outbox_deliveries", "Outbox sends by outcome (delivered, retried, failed).",
            ["outcome"], registry=None,
        ),
        fhir_retries=Counter(
            "redflags_fhir_retries", "FHIR client requests sent again, by the status that caused it.",
            ["status"], registry=None,
        ),
        store_errors=Counter(
            "redflags_store_errors", "Store operations that failed, by store.", ["store"], registry=None
        ),
    )  # fmt: skip


def enabled() -> bool:
    return _metrics() is not None


def folder() -> str | None:
    """This run's metric folder, if metrics are kept."""
    return os.environ.get(DIR_ENV) or None


def http_answer(method: str, route: str, status: int, seconds: float) -> None:
    if (m := _metrics()) is not None:
        m.requests.labels(method, route, str(status)).inc()
        m.latency.labels(method, route).observe(seconds)


def cds_call(service: str, hook: str, status: int, seconds: float) -> None:
    if (m := _metrics()) is not None:
        m.cds_calls.labels(service, hook, str(status)).inc()
        m.cds_latency.labels(service, hook).observe(seconds)


@contextmanager
def evaluation(call: str) -> Iterator[None]:
    """Time one call in an engine process; a store error escaping it is counted too."""
    m = _metrics()
    if m is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    except Exception as exc:
        if _is_store_error(exc):
            m.store_errors.labels("state").inc()
        raise
    finally:
        m.evaluations.labels(call).observe(time.perf_counter() - started)


def alert_transition(rule: str, tier: str | None, change: str) -> None:
    if (m := _metrics()) is not None:
        m.transitions.labels(rule, tier or "none", change).inc()


def engine_restart(reason: str) -> None:
    """An engine process replaced: ``deadline`` (killed for overrunning it), ``died``, ``cancelled``."""
    if (m := _metrics()) is not None:
        m.restarts.labels(reason).inc()
        if reason == "deadline":
            m.deadline_kills.inc()


def engine_busy() -> None:
    if (m := _metrics()) is not None:
        m.busy.inc()


def outbox_pass(delivered: int, retried: int, failed: int) -> None:
    if (m := _metrics()) is not None:
        for outcome, n in (("delivered", delivered), ("retried", retried), ("failed", failed)):
            if n:
                m.deliveries.labels(outcome).inc(n)


def fhir_retry(status: int | None) -> None:
    """What ``fhir_adapters.fhir_client.FhirClient`` calls before it sends a request again."""
    if (m := _metrics()) is not None:
        m.fhir_retries.labels(str(status) if status else "no answer").inc()


def store_error(store: str) -> None:
    if (m := _metrics()) is not None:
        m.store_errors.labels(store).inc()


def _is_store_error(exc: BaseException) -> bool:
    from redflags.state.model import FeedbackStoreError, StateStoreError

    return isinstance(exc, (StateStoreError, FeedbackStoreError))


#: The callback type ``FhirClient(on_retry=...)`` takes.
RetryHook = Callable[[int | None], None]
