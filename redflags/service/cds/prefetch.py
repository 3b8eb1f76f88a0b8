"""The patient's record for one CDS Hooks call: prefetch first, the client's FHIR server for the rest.

Per CDS Hooks 2.0 each prefetch key may be absent (the client chose not to, or could not,
satisfy it), ``null`` (the client has no data), a resource, a searchset Bundle (possibly
paged: ``next`` links are followed on ``fhirServer``) or an OperationOutcome (the client's
fetch failed). Absent keys and OperationOutcomes are fetched from ``fhirServer`` with the
filled template. If that cannot be done the call answers 412 (``PrefetchUnavailable``).

Which ``fhirServer`` may be read, at which addresses, is the ``FhirPolicy``'s to say (plain
http only on loopback with ``--allow-http-fhir``; private addresses only when listed). Every
failure to read it is answered with one message (``UNAVAILABLE``): the caller names the URL,
so differing messages would tell it which hosts and ports answer on our network. The reason
goes to the log. A record over the byte or page bound is the exception: it says so.
``read_prefetch`` reads the request alone; ``gather`` also reads fhirServer, blocking: run it
with ``fetch_limiter()``, a thread budget of its own (slow EHRs must not hold the threads that
verify other clients' tokens).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from anyio import CapacityLimiter

from engine.logger import get_logger
from fhir_adapters import prefetch_read
from fhir_adapters.fhir_client import (
    MAX_PAGES,
    FhirReadClient,
    FhirRefused,
    FhirTooLarge,
    FhirUnavailable,
)
from fhir_adapters.medication_ref import unresolved
from fhir_adapters.prefetch_read import Found, InvalidPrefetch, is_resource, next_link, unique, value_kind
from fhir_adapters.safe_url import Origin, parse_origin
from redflags.service.cds.fhir_policy import FhirPolicy
from redflags.service.cds.request import CdsRequest, CdsRequestError
from redflags.service.settings import ServiceSettings

_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z][A-Za-z0-9]*)\s*\}\}")
_READ = re.compile(r"[A-Z][A-Za-z]+/[^/?\s]+")  # fullmatch, no space: no trailing newline
_MISSING = object()
#: What a caller is told when fhirServer cannot be read, whatever the reason (no port oracle).
UNAVAILABLE = (
    "the data this service needs could not be read from fhirServer (the reason is in the service log)"
)
log = get_logger("redflags.service.prefetch")
#: Keys that only refine what the others give (an Encounter dates a diagnosis of its own; a
#: Medication names the drug of an order): absent from prefetch they are read from fhirServer
#: when the request gives one; without one, or when it cannot be read, the call goes on without
#: them (clients that predate these keys keep working; an undated diagnosis alerts nothing).
OPTIONAL_KEYS = frozenset({"Encounter", "Medication"})
#: Keys whose search is read to its first page only (its template sorts and bounds it by
#: ``_count``): later pages, prefetched or not, are never followed.
FIRST_PAGE_ONLY = frozenset({"Encounter"})
#: Medications read one by one from fhirServer per call when the medication records name them
#: by reference and neither prefetch nor the search (``_include``) brought them; more are left unread.
MAX_MEDICATION_READS = 20
#: Concurrent fhirServer reads per HTTP process (anyio worker threads, apart from the default pool).
FETCH_THREADS = 16
_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = weakref.WeakKeyDictionary()


class PrefetchUnavailable(Exception):
    """Data the service needs is neither prefetched nor obtainable from fhirServer (412).

    ``str()`` is for the caller; ``detail`` for the log (no URL, id or token in either).
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


def fetch_limiter() -> CapacityLimiter:
    """The fhirServer reads' own thread budget (call from the event loop)."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = CapacityLimiter(FETCH_THREADS)
    return limiter


def policy(listed: Iterable[Origin] | None, settings: ServiceSettings) -> FhirPolicy:
    """The fhirServer policy for a client (``listed``: its fhirServers, None when it has none)."""
    allowed = [parse_origin(text) for text in settings.fhir_allow]
    return FhirPolicy.of(listed, allowed, settings.allow_http_fhir)


class PrefetchInvalid(CdsRequestError):
    """A prefetch value that is not what its template asks for (400)."""


@dataclass(frozen=True, slots=True)
class Gathered:
    resources: list[Found]
    fetched: tuple[str, ...]  # prefetch keys read from fhirServer
    requests: int  # HTTP requests made to fhirServer


def fill(template: str, context: Mapping[str, Any]) -> str:
    """Replace ``{{context.field}}`` tokens with URL-encoded context values."""

    def value(match: re.Match[str]) -> str:
        found = context.get(match[1])
        if not isinstance(found, str):
            raise CdsRequestError(f"context.{match[1]} is needed by a prefetch template")
        return quote(found, safe="")

    filled = _TOKEN.sub(value, template)
    if "{{" in filled:
        raise ValueError(f"unsupported prefetch token in {template!r}")  # a bug in a service declaration
    return filled


def _entries(bundle: dict[str, Any], where: str) -> list[Found]:
    try:
        return list(prefetch_read.entries(bundle, where))
    except InvalidPrefetch as exc:
        raise PrefetchInvalid(str(exc)) from None


def _read_value(key: str, resource: dict[str, Any], expected: str) -> dict[str, Any]:
    try:
        return prefetch_read.read_value(key, resource, expected)
    except InvalidPrefetch as exc:
        raise PrefetchInvalid(str(exc)) from None


def _check_server(call: CdsRequest, missing: list[str]) -> str:
    if call.fhir_server is None:
        keys = ", ".join(missing)
        raise PrefetchUnavailable(
            f"prefetch lacks {keys} and the request gives no fhirServer to read them from"
        )
    return call.fhir_server


@dataclass(frozen=True, slots=True)
class Prefetched:
    """What the request itself carries, and what is still to be read from fhirServer."""

    found: list[Found]
    to_fetch: list[tuple[str, str]]  # (key, filled template)
    to_continue: list[tuple[str, dict[str, Any]]]  # prefetched Bundles with a next link

    @property
    def complete(self) -> bool:
        return not (self.to_fetch or self.to_continue)


def read_prefetch(templates: Mapping[str, str], call: CdsRequest) -> Prefetched:
    """The prefetched resources, checked; no I/O (an engine process runs it)."""
    found: list[Found] = []
    to_fetch: list[tuple[str, str]] = []
    to_continue: list[tuple[str, dict[str, Any]]] = []
    for key in sorted(templates):
        query = fill(templates[key], call.context)
        value = call.prefetch.get(key, _MISSING)
        where = f"prefetch.{key}"
        if value is None:
            continue  # the client has no data for this template
        if value is not _MISSING and not is_resource(value):
            raise PrefetchInvalid(f"{where} must be a FHIR resource, a Bundle or null")
        if value is _MISSING or value_kind(value) == "outcome":
            if key in OPTIONAL_KEYS and call.fhir_server is None:
                continue
            to_fetch.append((key, query))
        elif value_kind(value) == "bundle":
            found.extend(_entries(value, where))
            if next_link(value) and key not in FIRST_PAGE_ONLY:
                to_continue.append((key, value))
        elif _READ.fullmatch(query):
            found.append((where, _read_value(key, value, query), None))
        else:
            found.append((where, value, None))
    if not (to_fetch or to_continue) and call.fhir_server is not None:
        to_fetch += _medication_reads(found)  # the client did not _include them: read them
    return Prefetched(unique(found), to_fetch, to_continue)


def _medication_reads(found: list[Found]) -> list[tuple[str, str]]:
    """Reads of the Medications the medication records name but ``found`` lacks (bounded)."""
    missing = unresolved((resource, url) for _, resource, url in found)
    return [("Medication", ref) for ref in missing[:MAX_MEDICATION_READS]]


def gather(
    templates: Mapping[str, str],
    call: CdsRequest,
    settings: ServiceSettings,
    *,
    rules: FhirPolicy,
    deadline: float,
    **client: Any,
) -> Gathered:
    """Every resource the templates ask for: prefetched where given, else read from fhirServer.

    ``deadline`` (``time.monotonic``) bounds all of it; ``client``: more FhirReadClient options.
    When only ``OPTIONAL_KEYS`` were to be read and fhirServer fails, the prefetch is answered alone.
    """
    try:
        return _gather(templates, call, settings, rules=rules, deadline=deadline, **client)
    except PrefetchUnavailable as exc:
        given = read_prefetch(templates, call)
        if given.to_continue or any(key not in OPTIONAL_KEYS for key, _ in given.to_fetch):
            raise
        keys = sorted({key for key, _ in given.to_fetch})
        log.warning("cds_optional_prefetch_unavailable", keys=keys, reason=exc.detail)
        return Gathered(given.found, (), 0)


def _gather(
    templates: Mapping[str, str],
    call: CdsRequest,
    settings: ServiceSettings,
    *,
    rules: FhirPolicy,
    deadline: float,
    **client: Any,
) -> Gathered:
    """Every resource the templates ask for: prefetched where given, else read from fhirServer.

    ``deadline`` (``time.monotonic``) bounds all of it; ``client``: more FhirReadClient options.
    """
    given = read_prefetch(templates, call)
    if given.complete:
        return Gathered(given.found, (), 0)
    found = list(given.found)
    missing = [k for k, _ in given.to_fetch] + [f"later pages of {k}" for k, _ in given.to_continue]
    server = _check_server(call, missing)
    token = call.authorization.access_token if call.authorization else None
    try:
        with FhirReadClient(
            server,
            access_token=token,
            deadline=deadline,
            policy=rules,
            max_bytes=settings.fhir_max_bytes,
            **client,
        ) as fhir:
            for key, bundle in given.to_continue:
                pages = fhir.pages(bundle, f"prefetch.{key}")
                next(pages)  # the first page came with the request
                for n, page in enumerate(pages, start=2):
                    found.extend(_entries(page, f"{key} (fhirServer page {n})"))
            for key, query in given.to_fetch:
                if _READ.fullmatch(query):
                    resource = fhir.read(query, key)
                    if resource is not None:
                        found.append((f"{key} (fhirServer)", _read_value(key, resource, query), None))
                    continue
                for n, page in enumerate(fhir.search(query, key), start=1):
                    found.extend(_entries(page, f"{key} (fhirServer page {n})"))
                    if key in FIRST_PAGE_ONLY:
                        break
            if any(key != "Medication" for key, _ in given.to_fetch) or given.to_continue:
                for key, query in _medication_reads(found):  # fetched orders may name them too
                    resource = fhir.read(query, key)
                    if resource is not None:
                        found.append((f"{key} (fhirServer)", _read_value(key, resource, query), None))
            requests = fhir.requests
    except FhirRefused as exc:
        message = f"prefetch lacks {', '.join(missing)} and fhirServer {exc}: refused"
        raise PrefetchUnavailable(message) from None
    except FhirTooLarge as exc:
        raise PrefetchUnavailable(
            f"the patient's record on fhirServer is larger than this service reads for one call "
            f"({settings.fhir_max_bytes} bytes or {MAX_PAGES} pages per search)",
            str(exc),
        ) from None
    except FhirUnavailable as exc:
        raise PrefetchUnavailable(UNAVAILABLE, str(exc)) from None
    fetched = tuple(dict.fromkeys(k for k, _ in given.to_fetch))  # "Medication" once
    return Gathered(unique(found), fetched, requests)
