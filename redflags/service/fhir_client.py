"""A small FHIR read client for prefetch fallback: reads and paged searches on one server.

Built for one CDS Hooks call and closed after it: one ``requests.Session`` (no cookies or
``.netrc`` credentials from the environment, no redirects), every call bounded by what is left
of one time budget, ``next`` links followed only to the origin (scheme, host, port) of the
FHIR server and at most ``max_pages`` pages per search. The bearer token lives in the session
headers for the call's lifetime only; it never appears in an error message or a log line.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import ip_address
from typing import Any
from urllib.parse import urljoin, urlsplit

import orjson
import requests

FHIR_JSON = "application/fhir+json"
#: Largest response body read from a FHIR server (a bigger page is refused, not truncated).
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}


class FhirUnavailable(Exception):
    """The data cannot be had from the FHIR server (a CDS Hooks call answers 412)."""


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in; hosts compare lower-case."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def is_loopback(url: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost`` (by name: no DNS lookup is made)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


class FhirReadClient:
    """Reads from one FHIR base URL within a deadline; use as a context manager."""

    def __init__(
        self,
        base: str,
        *,
        access_token: str | None,
        budget_s: float,
        max_pages: int = 100,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self.base = base.rstrip("/")
        self._origin = origin(self.base)
        self._deadline = time.monotonic() + budget_s
        self._connect_timeout = connect_timeout_s
        self.max_pages = max_pages
        self.requests = 0
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies, no .netrc credentials for a foreign host
        self._session.headers["Accept"] = FHIR_JSON
        if access_token:
            self._session.headers["Authorization"] = f"Bearer {access_token}"

    def __enter__(self) -> FhirReadClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.headers.pop("Authorization", None)
        self._session.close()

    def read(self, relative: str, label: str) -> dict[str, Any] | None:
        """``GET [base]/Type/id``: the resource, or None when the server has none (404/410).

        ``label`` names the request in error messages (never the URL: it holds ids).
        """
        return self._get(self._absolute(relative), label, missing_ok=True)

    def search(self, relative: str, label: str) -> Iterator[dict[str, Any]]:
        """``GET [base]/Type?params``: every page of the searchset, following ``next`` links."""
        page = self._get(self._absolute(relative), label)
        yield from self.pages(page, label)

    def pages(self, bundle: dict[str, Any] | None, label: str) -> Iterator[dict[str, Any]]:
        """This Bundle, then the pages its ``next`` links lead to (same origin only)."""
        count = 0
        while bundle is not None:
            if bundle.get("resourceType") != "Bundle":
                raise FhirUnavailable(
                    f"{label}: the server answered a {bundle.get('resourceType')}, not a Bundle"
                )
            count += 1
            yield bundle
            nxt = next_link(bundle)
            if nxt is None:
                return
            url = urljoin(self.base + "/", nxt)
            if origin(url) != self._origin:
                raise FhirUnavailable(
                    f"{label}: a next link leads outside the FHIR server ({origin(url)[1]}); not followed"
                )
            if count >= self.max_pages:
                raise FhirUnavailable(f"{label}: more than {self.max_pages} pages")
            bundle = self._get(url, label)

    def _absolute(self, relative: str) -> str:
        return f"{self.base}/{relative.lstrip('/')}"

    def _timeout(self, what: str) -> tuple[float, float]:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise FhirUnavailable(f"{what}: out of time for the FHIR server")
        return min(self._connect_timeout, left), left

    def _get(self, url: str, what: str, missing_ok: bool = False) -> dict[str, Any] | None:
        self.requests += 1
        try:
            with self._session.get(
                url, timeout=self._timeout(what), allow_redirects=False, stream=True
            ) as answer:
                if missing_ok and answer.status_code in (404, 410):
                    return None
                if answer.status_code != 200:
                    raise FhirUnavailable(f"{what}: the FHIR server answered HTTP {answer.status_code}")
                body = answer.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
        except requests.Timeout:
            raise FhirUnavailable(f"{what}: the FHIR server did not answer in time") from None
        except requests.RequestException as exc:
            raise FhirUnavailable(f"{what}: cannot reach the FHIR server ({type(exc).__name__})") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise FhirUnavailable(f"{what}: response larger than {MAX_RESPONSE_BYTES} bytes")
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
