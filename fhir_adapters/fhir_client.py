"""The client redflags writes to a FHIR server with: one ``requests.Session`` per server.

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
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson
import requests
import structlog

from fhir_adapters.call_deadline import Deadline, mount_deadlines

log = structlog.get_logger("redflags.fhir_client")

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
    ) -> None:
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
        ceiling: float = min(self.retry.max_backoff_s, self.retry.backoff_s * 2 ** (attempt - 1))
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


def _diagnostics(outcome: dict[str, Any]) -> str:
    issues = outcome.get("issue")
    first = issues[0] if isinstance(issues, list) and issues and isinstance(issues[0], dict) else {}
    details = first.get("details")
    text = (
        first.get("diagnostics")
        or (details.get("text") if isinstance(details, dict) else None)
        or first.get("code")
        or ""
    )
    return " ".join(str(text).split())[:200]
