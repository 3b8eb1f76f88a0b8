"""The one HTTP FHIR client: ``FhirClient`` writes back, ``FhirReadClient`` reads a CDS call's record.

Both share one core: ``fhir_adapters.call_deadline`` (one deadline over connect, headers and the
whole body: a server dripping bytes cannot hold a call longer), ``fhir_adapters.safe_url`` (the
URL checked is the URL sent), FHIR JSON media types, bounded bodies and errors that name a
label or a path, never a query, an id or a token.

**Writing** (``FhirClient``, one ``requests.Session`` per server, SMART auth via ``Auth``):

Every call has one deadline (``timeout_s``) over connect, headers and the whole body
(``fhir_adapters.call_deadline``): a server dripping bytes cannot hold it longer. Connection
errors, timeouts, 429 and 5xx are retried a few times with exponential backoff and full
jitter, honouring ``Retry-After``; what is still failing is
a ``FhirTransientError`` (worth retrying later: the outbox schedules it, with ``retry_after``
when the server asked for longer than this client waits). Any other 4xx is the request's own
fault, a ``FhirPermanentError`` carrying the server's OperationOutcome, never retried. Error
messages name the method, the path (never the query: it can hold identifiers) and the status,
never a token.

Whatever the server answers ends as one of these two errors or a checked result: a body that
is cut off, too large, not JSON, or (for a transaction) not a transaction-response is a
``FhirBadAnswer`` (transient: the transaction is idempotent, so it can simply go again), and a
``Retry-After`` is read as a finite, non-negative number of seconds, at most a day.

An answer that shows the URL or the credentials are wrong is neither: a 404/405 on the base
URL, a 4xx or 2xx that is not FHIR JSON (an HTML page), a 401/403 is a ``FhirConfigError``
(the request may be fine; the operator must fix ``--fhir-server`` or the token). Every error
carries a short ``reason`` ("connection refused", "timeout", "HTTP 422", ...) to count by.

**Reading** (``FhirReadClient``, built for one CDS Hooks call and closed after it; which server
it may read is the caller's ``OriginPolicy``). What it guarantees, and how:

- One origin, one address. The base URL's host is resolved once and checked by the
  policy; every connection goes to that address (the Host header, TLS SNI and
  certificate check keep the name), so DNS rebinding cannot move the call elsewhere.
- The token goes only there. Every URL (the base, each ``next`` link) is checked and parsed by
  ``fhir_adapters.safe_url`` - the one parse whose origin is compared is the one whose path is
  sent - and the ``Authorization`` header is added per request after that check.
- One deadline for everything: connect, headers, every body chunk, every page. Socket timeouts
  alone cannot give that (a server dripping a byte a second never trips a read timeout), so a
  watchdog timer shuts the call's sockets down when the deadline passes.
- Bounded memory: bodies are streamed and counted against one byte budget for all pages of the
  call; over it the read stops (``FhirTooLarge``), nothing is truncated silently.

Errors are ``FhirUnavailable`` whose message is for the log (a label, never a URL, an id or the
token); what the caller is told is decided by the caller (the service's ``prefetch``).
"""

from __future__ import annotations

import http.client
import math
import random
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

import certifi
import orjson
import requests
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util import Url, connection

from engine.logger import get_logger
from fhir_adapters import safe_url
from fhir_adapters.call_deadline import Deadline, mount_deadlines
from fhir_adapters.prefetch_read import next_link
from fhir_adapters.safe_url import Origin, UnsafeUrl, address, loopback_name

log = get_logger("redflags.fhir_client")

FHIR_JSON = "application/fhir+json"
#: Characters of a response body kept on an error (enough for an OperationOutcome).
BODY_KEPT = 4000
#: Bytes of one answer read at most (a transaction-response of a few entries is kilobytes).
MAX_ANSWER_BYTES = 8 * 1024 * 1024
#: A longer Retry-After is read as this (a server cannot park an alert for years).
MAX_RETRY_AFTER_S = 86_400.0
_DELAY_SECONDS = re.compile(r"[0-9]+")


class FhirError(Exception):
    """A FHIR request that did not succeed; ``outcome`` is the server's OperationOutcome."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        outcome: dict[str, Any] | None = None,
        body: str = "",
        retry_after: float | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.body = body[:BODY_KEPT]
        self.retry_after = retry_after
        #: a short, patient-free category for summaries: "connection refused", "HTTP 503", ...
        self.reason = reason or (f"HTTP {status}" if status else "error")


class FhirTransientError(FhirError):
    """Worth retrying later: unreachable, timed out, 429 or 5xx."""


class FhirPermanentError(FhirError):
    """The server refused the request itself (4xx): sending it again will not help."""


class FhirConfigError(FhirError):
    """The base URL does not answer as a FHIR server, or refuses the credentials: the
    configuration is wrong, not the request; nothing about the item should be concluded."""


class FhirBadAnswer(FhirTransientError):
    """A 2xx answer that is not what FHIR promises (cut off, too large, not JSON, wrong shape):
    nothing says the request took effect, and sending an idempotent one again is safe."""


class Auth(Protocol):
    def headers(self, session: requests.Session) -> dict[str, str]: ...

    def refresh(self) -> bool:
        """Drop a cached credential after a 401; True when a new one may succeed."""
        ...


class BearerToken:
    """A static bearer token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "BearerToken(***)"

    def headers(self, session: requests.Session) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def refresh(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3  # sends per call, the first included
    backoff_s: float = 0.5  # ceiling of the first wait, doubled each time (full jitter)
    max_backoff_s: float = 8.0
    max_retry_after_s: float = 30.0  # a longer Retry-After is left to the caller


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After``: delay-seconds (ASCII digits) or an HTTP-date, as seconds in
    [0, ``MAX_RETRY_AFTER_S``]; anything else (``1e20``, ``-5``, ``NaN``, garbage) is None."""
    if not value:
        return None
    value = value.strip()
    if _DELAY_SECONDS.fullmatch(value):
        seconds = float(value) if len(value) <= 9 else MAX_RETRY_AFTER_S
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, OverflowError, IndexError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def _outcome(response: requests.Response) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    return _as_outcome(doc)


def _as_outcome(doc: object) -> dict[str, Any] | None:
    return doc if isinstance(doc, dict) and doc.get("resourceType") == "OperationOutcome" else None


def _read(response: requests.Response, where: str, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The whole body, at most ``limit`` bytes; cut off or too large is a ``FhirBadAnswer``."""
    status = response.status_code
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise FhirBadAnswer(f"{where}: HTTP {status} answer larger than {limit} bytes", status)
            chunks.append(chunk)
    except requests.RequestException as exc:
        raise FhirBadAnswer(f"{where}: HTTP {status} answer cut off ({type(exc).__name__})", status) from None
    finally:
        response.close()
    body = b"".join(chunks)
    response._content = body  # so .content and .text give the bytes read
    return body


class FhirClient:
    """Reads and writes one FHIR base URL; use as a context manager (or call ``close``)."""

    def __init__(
        self,
        base_url: str,
        auth: Auth | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: Callable[[], float] = random.random,
        on_retry: Callable[[int | None], None] | None = None,
    ) -> None:
        """``on_retry(status)``: told before each request sent again (the caller counts them)."""
        self.on_retry = on_retry
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout_s = timeout_s
        self.retry = retry
        self._sleep, self._rng = sleep, rng
        self.session = session or requests.Session()
        self.session.trust_env = False  # no proxies or .netrc credentials from the environment
        self.session.headers.update({"Accept": FHIR_JSON, "Content-Type": FHIR_JSON})
        mount_deadlines(self.session)  # timeout_s bounds each send as a whole, not each read

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # -- one request, with retries ------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        url = path if path.startswith(("http://", "https://")) else f"{self.base_url}/{path.lstrip('/')}"
        where = f"{method} {urlsplit(url).path}"
        data = orjson.dumps(body) if body is not None else None
        refreshed = False
        attempt = 0
        error: requests.Response | FhirError | None = None
        try:
            while True:
                attempt += 1
                error = self._send(method, url, where, data, headers)
                if isinstance(error, requests.Response):
                    return error
                if error.status == 401 and not refreshed and self.auth is not None and self.auth.refresh():
                    refreshed = True  # a new token once; does not count as an attempt
                    attempt -= 1
                    continue
                if not isinstance(error, FhirTransientError) or attempt >= self.retry.attempts:
                    raise error
                wait = self._wait(attempt, error.retry_after)
                if wait is None:
                    raise error  # the server asked for longer than we wait: the caller schedules it
                log.info(
                    "fhir_retry", request=where, status=error.status, attempt=attempt, wait_s=round(wait, 2)
                )
                if self.on_retry is not None:
                    self.on_retry(error.status)
                self._sleep(wait)
        finally:
            error = None  # no cycle error -> traceback -> this frame: the body is freed with the error

    def _send(
        self, method: str, url: str, where: str, data: bytes | None, headers: dict[str, str] | None
    ) -> requests.Response | FhirError:
        sent = dict(headers or {})
        if self.auth is not None:
            try:
                sent.update(self.auth.headers(self.session))
            except FhirError as exc:
                return exc
        with Deadline(self.timeout_s) as deadline:
            answer = self._exchange(method, url, where, data, sent)
        if deadline.expired:  # whatever was read was cut short, even if it parses
            return FhirTransientError(f"{where}: no answer within {self.timeout_s:g} s", reason="timeout")
        if isinstance(answer, FhirError):
            return answer
        response = answer
        status = response.status_code
        if status < 300:
            return response
        text = response.text
        outcome = _outcome(response)
        after = retry_after_seconds(response.headers.get("Retry-After"), time.time())
        message = f"{where}: HTTP {status}" + (f" ({_diagnostics(outcome)})" if outcome else "")
        kind = FhirTransientError if status == 429 or status >= 500 else FhirPermanentError
        if kind is FhirPermanentError:
            misfit = self._misfit(url, status, outcome, response.headers.get("Content-Type"))
            if misfit:
                return FhirConfigError(misfit, status, outcome, text, reason="configuration error")
        return kind(message, status, outcome, text, after)

    def _misfit(self, url: str, status: int, outcome: dict[str, Any] | None, media: str | None) -> str | None:
        """Why a 4xx says the configuration is wrong rather than the request, or None."""
        base = _shown(self.base_url)
        if status in (401, 403):
            return f"{base} refuses the credentials (HTTP {status})"
        if outcome is None:
            return f"{base} does not answer as a FHIR server (HTTP {status}, {_media(media)} answer)"
        if status in (404, 405) and url.rstrip("/") == self.base_url:
            why = _diagnostics(outcome)
            return f"{base} does not answer as a FHIR server (HTTP {status} on the base URL: {why})"
        return None

    def _exchange(
        self, method: str, url: str, where: str, data: bytes | None, headers: dict[str, str]
    ) -> requests.Response | FhirError:
        """Request and whole body, or the error that ended them."""
        try:
            response = self.session.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=self.timeout_s,
                allow_redirects=False,
                stream=True,
            )
        except requests.Timeout:
            return FhirTransientError(f"{where}: no answer within {self.timeout_s:g} s", reason="timeout")
        except requests.ConnectionError as exc:
            if _refused(exc):
                return FhirTransientError(f"{where}: connection refused", reason="connection refused")
            return FhirTransientError(
                f"{where}: cannot connect ({type(exc).__name__})", reason="cannot connect"
            )
        except requests.RequestException as exc:  # a malformed status line or header, ...
            return FhirBadAnswer(f"{where}: unreadable answer ({type(exc).__name__})")
        try:
            _read(response, where)
        except FhirBadAnswer as exc:
            return exc
        return response

    def _wait(self, attempt: int, retry_after: float | None) -> float | None:
        if retry_after is not None:
            return retry_after if retry_after <= self.retry.max_retry_after_s else None
        ceiling: float = min(self.retry.max_backoff_s, self.retry.backoff_s * 2.0 ** (attempt - 1))
        return self._rng() * ceiling

    # -- FHIR interactions -------------------------------------------------------------------
    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction (or batch) Bundle; return the checked transaction-response.

        An entry answered 4xx is a ``FhirPermanentError`` (429 and 5xx: transient) carrying the
        entry's OperationOutcome; an answer that is not a transaction-response, or an entry
        without a readable status, is a ``FhirBadAnswer``.
        """
        response = self.request("POST", self.base_url, bundle)
        status = response.status_code
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            media = response.headers.get("Content-Type")
            if not _is_json(media):  # a web page, not a cut-off or garbled FHIR answer
                raise FhirConfigError(
                    f"{_shown(self.base_url)} does not answer as a FHIR server "
                    f"(HTTP {status}, {_media(media)} answer)",
                    status,
                    reason="configuration error",
                ) from None
            raise FhirBadAnswer(f"POST /: HTTP {status} answer is not JSON", status) from None
        if not (
            isinstance(answer, dict)
            and answer.get("resourceType") == "Bundle"
            and answer.get("type") in ("transaction-response", "batch-response")
            and isinstance(answer.get("entry", []), list)
        ):
            raise FhirBadAnswer(f"POST /: HTTP {status} answer is not a transaction-response", status)
        for i, entry in enumerate(answer.get("entry", [])):
            code = _entry_status(entry)
            if code is None:
                raise FhirBadAnswer(f"POST /: HTTP {status} answer: entry {i} has no status", status)
            if code >= 400:
                outcome = _as_outcome(entry["response"].get("outcome"))
                kind = FhirTransientError if code == 429 or code >= 500 else FhirPermanentError
                detail = f" ({_diagnostics(outcome)})" if outcome else ""
                raise kind(f"POST /: entry {i} answered {code}{detail}", code, outcome)
        return answer


def _entry_status(entry: object) -> int | None:
    """The HTTP code of a transaction-response entry ("201 Created" -> 201), None if unreadable."""
    response = entry.get("response") if isinstance(entry, dict) else None
    text = response.get("status") if isinstance(response, dict) else None
    found = re.match(r"\s*([1-5][0-9]{2})(?![0-9])", text) if isinstance(text, str) else None
    return int(found.group(1)) if found else None


def _refused(exc: BaseException) -> bool:
    """Whether a connection error was the port refusing (nothing listens): found in the chain
    of causes requests and urllib3 wrap around the socket error."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        cause = stack.pop()
        if not isinstance(cause, BaseException) or id(cause) in seen:
            continue
        if isinstance(cause, ConnectionRefusedError):
            return True
        seen.add(id(cause))
        stack += [cause.__cause__, cause.__context__, getattr(cause, "reason", None), *cause.args]
    return False


def _is_json(media: str | None) -> bool:
    kind = (media or "").split(";")[0].strip().lower()
    return not kind or kind.endswith("/json") or kind.endswith("+json")


def _media(media: str | None) -> str:
    kind = (media or "").split(";")[0].strip().lower()
    return kind[:60] if kind else "an untyped"


def _shown(url: str) -> str:
    """A URL fit for a message: no user, password, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


#: What a server's diagnostics may echo of our credentials (an Authorization header, a JWT, an
#: opaque token): never kept, since the text is logged and stored with an outbox item at rest.
#: 40 characters spare UUIDs (36) and resource ids, which help an operator.
_SECRET = re.compile(r"(?i:bearer|basic)\s+\S+|eyJ[\w-]*\.[\w-]*\.[\w-]*|[A-Za-z0-9._~+=-]{40,}")


def _diagnostics(outcome: dict[str, Any]) -> str:
    """The server's own words on a failure, one line, bounded, credentials blanked."""
    issues = outcome.get("issue")
    first = issues[0] if isinstance(issues, list) and issues and isinstance(issues[0], dict) else {}
    details = first.get("details")
    text = (
        first.get("diagnostics")
        or (details.get("text") if isinstance(details, dict) else None)
        or first.get("code")
        or ""
    )
    return _SECRET.sub("[redacted]", " ".join(str(text).split()))[:200]


# -- reading one CDS call's record ----------------------------------------------------------------
#: Default bound on the bytes read from fhirServer for one call, all pages together.
MAX_FETCH_BYTES = 10 * 1024 * 1024
#: Pages followed per search.
MAX_PAGES = 100
CHUNK = 64 * 1024
#: Name lookups run here so a slow resolver cannot outlast the call's deadline.
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fhir-resolve")

Resolver = Callable[[str, int], Sequence[str]]
#: What a failed exchange means, first match (NewConnectionError is also a ConnectTimeoutError).
_FAILURES: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], str], ...] = (
    (NewConnectionError, "cannot be reached"),
    ((ConnectTimeoutError, ReadTimeoutError, TimeoutError), "did not answer in time"),
    (BaseException, "broke off the exchange"),
)


class OriginPolicy(Protocol):
    """Which servers a reader may reach: the service's (``FhirPolicy``), passed in per client."""

    def before_resolving(self, origin: Origin) -> str | None:
        """Why this origin is refused whatever it resolves to, or None."""
        ...

    def after_resolving(self, origin: Origin, addresses: Sequence[str]) -> str | None:
        """Why these addresses are refused for this origin, or None."""
        ...


class FhirUnavailable(FhirError):
    """The data cannot be had from the FHIR server (a CDS Hooks call answers 412); one of the
    client's ``FhirError`` family, raised by ``FhirReadClient`` with a message for the log."""


class FhirRefused(FhirUnavailable):
    """The policy refuses the fhirServer URL as given (decided without any network use)."""


class FhirTooLarge(FhirUnavailable):
    """The record is larger than the service reads for one call (its message may be shown)."""


def origin(url: str) -> Origin:
    """(scheme, host, port) as urllib3 reads the URL, default port filled in, host lower-case."""
    return safe_url.origin(url)


def is_loopback(url: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (by name: no DNS lookup is made)."""
    return loopback_name(safe_url.origin(url).host)


def system_resolver(host: str, port: int) -> list[str]:
    """Every address of ``host`` (TCP), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _Pinned:
    """Connection mixin: connect to the checked address, watched by the call's watchdog."""

    _pinned: str
    _watchdog: Deadline

    def __init__(self, *args: Any, pinned: str, watchdog: Deadline, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pinned = pinned
        self._watchdog = watchdog

    def _new_conn(self) -> socket.socket:
        conn: Any = self
        try:
            sock = connection.create_connection(
                (self._pinned, conn.port),
                conn.timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            raise ConnectTimeoutError(conn, "connect timed out") from exc
        except OSError as exc:
            raise NewConnectionError(conn, f"cannot connect ({type(exc).__name__})") from exc
        self._watchdog.watch(sock)
        return sock


class _PinnedHTTP(_Pinned, HTTPConnection):
    pass


class _PinnedHTTPS(_Pinned, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTP


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPS


def _resolve(resolve: Resolver, target: Origin, watchdog: Deadline) -> Sequence[str]:
    try:
        return _RESOLVER.submit(resolve, target.host, target.port).result(max(0.0, watchdog.left()))
    except FutureTimeout:
        raise FhirUnavailable("name lookup out of time") from None
    except (OSError, ValueError) as exc:  # ValueError: a name the idna codec refuses (a label too long)
        raise FhirUnavailable(f"name lookup failed ({type(exc).__name__})") from None


class FhirReadClient:
    """Reads from one FHIR base URL within a deadline; use as a context manager."""

    def __init__(
        self,
        base: str,
        *,
        access_token: str | None,
        deadline: float,
        policy: OriginPolicy,
        max_pages: int = MAX_PAGES,
        max_bytes: int = MAX_FETCH_BYTES,
        connect_timeout_s: float = 3.0,
        resolve: Resolver = system_resolver,
        ca_certs: str | None = None,
    ) -> None:
        self.requests = 0
        self.max_pages = max_pages
        self.bytes_left = max_bytes
        self._max_bytes = max_bytes
        self._token = access_token
        self._connect_timeout = connect_timeout_s
        try:
            base_url = safe_url.parse(base.rstrip("/"))
        except UnsafeUrl as exc:
            raise FhirRefused(str(exc)) from None
        self.base = base_url.url
        self._origin = safe_url.origin(base_url)
        refusal = policy.before_resolving(self._origin)
        if refusal:
            raise FhirRefused(refusal)
        self._watchdog = Deadline(deadline - time.monotonic()).start()
        try:
            addresses = _literal(self._origin.host) or _resolve(resolve, self._origin, self._watchdog)
            refusal = policy.after_resolving(self._origin, addresses)
            if refusal:
                raise FhirUnavailable(f"fhirServer refused: {refusal}")
        except BaseException:
            self._watchdog.close()
            raise
        pool = _HTTPSPool if self._origin.scheme == "https" else _HTTPPool
        tls: dict[str, Any] = {}
        if self._origin.scheme == "https":
            tls = {"cert_reqs": "CERT_REQUIRED", "ca_certs": ca_certs or certifi.where()}
        self._pool = pool(
            self._origin.host,
            self._origin.port,
            maxsize=1,
            block=False,
            retries=False,
            pinned=addresses[0],
            watchdog=self._watchdog,
            **tls,
        )

    def __enter__(self) -> FhirReadClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._watchdog.close()
        self._pool.close()

    def read(self, relative: str, label: str) -> dict[str, Any] | None:
        """``GET [base]/Type/id``: the resource, or None when the server has none (404/410).

        ``label`` names the request in error messages (never the URL: it holds ids).
        """
        return self._get(self._absolute(relative, label), label, missing_ok=True)

    def search(self, relative: str, label: str) -> Iterator[dict[str, Any]]:
        """``GET [base]/Type?params``: every page of the searchset, following ``next`` links."""
        page = self._get(self._absolute(relative, label), label)
        yield from self.pages(page, label)

    def pages(self, bundle: dict[str, Any] | None, label: str) -> Iterator[dict[str, Any]]:
        """This Bundle, then the pages its ``next`` links lead to (same origin only)."""
        count = 0
        while bundle is not None:
            if bundle.get("resourceType") != "Bundle":
                found = str(bundle.get("resourceType"))[:40]  # the server's text: bounded in the log
                raise FhirUnavailable(f"{label}: the server answered a {found}, not a Bundle")
            count += 1
            yield bundle
            nxt = next_link(bundle)
            if nxt is None:
                return
            if count >= self.max_pages:
                raise FhirTooLarge(f"{label}: more than {self.max_pages} pages")
            bundle = self._get(self._follow(nxt, label), label)

    def _absolute(self, relative: str, label: str) -> Url:
        return self._same_origin(_checked(f"{self.base}/{relative.lstrip('/')}", label), label)

    def _follow(self, link: str, label: str) -> Url:
        try:  # the text first: urljoin has a parser of its own
            joined = urljoin(self.base + "/", safe_url.check_text(link))
        except ValueError as exc:  # UnsafeUrl, or urljoin's (an unclosed IPv6 bracket)
            raise FhirUnavailable(f"{label}: next link: unsafe URL ({exc}); not followed") from None
        return self._same_origin(_checked(joined, f"{label}: next link"), label)

    def _same_origin(self, url: Url, label: str) -> Url:
        if safe_url.origin(url) != self._origin:
            raise FhirUnavailable(f"{label}: a next link leads outside the FHIR server; not followed")
        return url

    def _get(self, url: Url, what: str, missing_ok: bool = False) -> dict[str, Any] | None:
        left = self._watchdog.left()
        if left <= 0 or self._watchdog.expired:
            raise FhirUnavailable(f"{what}: out of time for the FHIR server")
        headers = {"Accept": FHIR_JSON}
        if self._token:  # only now: the URL was checked to be on the FHIR server's origin
            headers["Authorization"] = f"Bearer {self._token}"
        self.requests += 1
        try:
            answer = self._pool.urlopen(
                "GET",
                safe_url.target(url),
                headers=headers,
                retries=False,
                redirect=False,
                preload_content=False,
                timeout=Timeout(connect=min(self._connect_timeout, left), read=left),
            )
            body = None
            try:
                if missing_ok and answer.status in (404, 410) and not self._watchdog.expired:
                    return None
                if answer.status != 200:
                    raise FhirUnavailable(f"{what}: the FHIR server answered HTTP {answer.status}")
                body = self._body(answer, what)
            finally:
                if body is None:  # not read to its end: the connection cannot be reused
                    answer.close()
                answer.release_conn()
        except (HTTPError, OSError, http.client.HTTPException, ValueError) as exc:
            if self._watchdog.expired or self._watchdog.left() <= 0:
                raise FhirUnavailable(f"{what}: the FHIR server did not answer in time") from None
            reason = next(reason for kinds, reason in _FAILURES if isinstance(exc, kinds))
            raise FhirUnavailable(f"{what}: the FHIR server {reason} ({type(exc).__name__})") from None
        if self._watchdog.expired:  # the watchdog's shutdown can look like an end of body
            raise FhirUnavailable(f"{what}: the FHIR server did not answer in time")
        return _resource(body, what)

    def _body(self, answer: BaseHTTPResponse, what: str) -> bytearray:
        """The body, streamed: stops at the byte budget or the deadline, whichever comes first."""
        declared = answer.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.bytes_left:
            raise self._too_large(what)
        body = bytearray()
        for chunk in answer.stream(CHUNK, decode_content=True):
            body += chunk
            if len(body) > self.bytes_left:
                raise self._too_large(what)
            if self._watchdog.left() <= 0:
                raise FhirUnavailable(f"{what}: the FHIR server did not answer in time")
        self.bytes_left -= len(body)
        return body

    def _too_large(self, what: str) -> FhirTooLarge:
        return FhirTooLarge(f"{what}: over {self._max_bytes} bytes read from the FHIR server")


def _literal(host: str) -> list[str]:
    """``[host]`` when it is an IP address (nothing to look up), else ``[]``."""
    try:
        return [str(address(host))]
    except ValueError:
        return []


def _checked(url: str, what: str) -> Url:
    try:
        return safe_url.parse(url)
    except UnsafeUrl as exc:
        raise FhirUnavailable(f"{what}: unsafe URL ({exc}); not followed") from None


def _resource(body: bytearray, what: str) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise FhirUnavailable(f"{what}: the FHIR server answered something that is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise FhirUnavailable(f"{what}: the FHIR server answered something that is not a FHIR resource")
    if doc["resourceType"] == "OperationOutcome":
        raise FhirUnavailable(f"{what}: the FHIR server answered an OperationOutcome")
    return doc
