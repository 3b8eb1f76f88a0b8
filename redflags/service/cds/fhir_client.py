"""A small FHIR read client for prefetch fallback: reads and paged searches on one server.

Built for one CDS Hooks call and closed after it. What it guarantees, and how:

- One origin, one address. The base URL's host is resolved once and checked by the
  ``FhirPolicy``; every connection goes to that address (the Host header, TLS SNI and
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
token); what the caller is told is decided by ``prefetch``.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urljoin

import certifi
import orjson
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, Timeout
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util import Url, connection

from fhir_adapters import safe_url
from fhir_adapters.call_deadline import Deadline
from fhir_adapters.safe_url import Origin, UnsafeUrl
from redflags.service.cds.fhir_policy import FhirPolicy, address, loopback_name

FHIR_JSON = "application/fhir+json"
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


class FhirUnavailable(Exception):
    """The data cannot be had from the FHIR server (a CDS Hooks call answers 412)."""


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
        policy: FhirPolicy,
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


def next_link(bundle: dict[str, Any]) -> str | None:
    links = bundle.get("link")
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None
