"""URLs we may send a bearer token to: checked on the form the HTTP library will use.

Python's ``urlsplit`` and urllib3's ``parse_url`` disagree on hostile input: in
``http://a:1\\@b:2/x`` urlsplit sees host ``b`` while urllib3 (and so requests) connects to
``a``. An origin check made with one parser and a connection made with the other leaks the
token. So a URL is first refused outright if it holds anything a parser may read two ways
(backslash, userinfo, whitespace, control or non-ASCII characters), then parsed once with
urllib3's parser; its origin and the request target sent come from that one parse.

A leaf module: imports nothing from this project.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from urllib3.exceptions import LocationParseError
from urllib3.util import Url, parse_url

DEFAULT_PORTS = {"http": 80, "https": 443}
#: Printable ASCII without space, backslash or DEL: anything else is refused, never repaired.
_PLAIN = re.compile(r"[!-\[\]-~]+")


class UnsafeUrl(ValueError):
    """A URL we will not follow. The message ('is not ...', 'holds ...') never quotes the URL:
    it may hold ids or secrets."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def check_text(url: object) -> str:
    """The text of a URL (absolute or relative) if no parser can read it two ways."""
    if not isinstance(url, str) or not url:
        raise UnsafeUrl("is not a URL")
    if not _PLAIN.fullmatch(url):
        raise UnsafeUrl("holds whitespace, a backslash, a control or a non-ASCII character")
    return url


def parse(url: object) -> Url:
    """The absolute URL as urllib3 reads it, or UnsafeUrl naming what is wrong (not the URL)."""
    url = check_text(url)
    try:
        parts = parse_url(url)
    except LocationParseError:
        raise UnsafeUrl("is not a valid URL (host or port)") from None
    scheme = (parts.scheme or "").lower()
    if scheme not in DEFAULT_PORTS:
        raise UnsafeUrl("is not an http(s) URL")
    if not parts.host:
        raise UnsafeUrl("has no host")
    if parts.auth is not None or "@" in (parts.netloc or ""):
        raise UnsafeUrl("holds credentials (user@host)")
    if parts.port is not None and not 0 < parts.port < 65536:
        raise UnsafeUrl("has an invalid port")
    return parts


def origin(url: str | Url) -> Origin:
    """(scheme, host, port) of a checked URL, default port filled in, host lower-case."""
    parts = parse(url) if isinstance(url, str) else url
    scheme = (parts.scheme or "").lower()
    host = (parts.host or "").lower().strip("[]")
    return Origin(scheme, host, parts.port or DEFAULT_PORTS[scheme])


def parse_origin(text: object) -> Origin:
    """An origin as written in configuration: ``scheme://host[:port]``, nothing more."""
    parts = parse(text)
    if (parts.path or "/") != "/" or parts.query is not None or parts.fragment is not None:
        raise UnsafeUrl("is not an origin (scheme://host[:port] only: no path, query or fragment)")
    return origin(parts)


def target(parts: Url) -> str:
    """The request target sent on the wire (path and query) for a checked URL."""
    return parts.request_uri


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def address(text: str) -> IpAddress:
    """An IP address, IPv4-mapped IPv6 (``::ffff:127.0.0.1``) read as the IPv4 it maps."""
    ip = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def loopback_name(host: str) -> bool:
    """Loopback by its name or literal, without any DNS lookup."""
    if host == "localhost":
        return True
    try:
        return address(host).is_loopback
    except ValueError:
        return False
