"""Which ``fhirServer`` a CDS call may make this service read from, and at which addresses.

A request names its ``fhirServer``; without a policy the service would read (with the EHR's
token) from any host the caller names, including the cloud metadata service, the private
network and its own loopback. So, per call:

- a client with ``fhirServers`` in the clients file may name only those origins (and those of
  ``serve --fhir-allow``, which every client may name); an origin listed is trusted at any
  address, private ones included;
- any other origin must be https and resolve to public addresses only;
- plain http only with ``--allow-http-fhir`` and a loopback host (tests), as before;
- ``--allow-http-fhir`` also allows loopback addresses (tests, a local sidecar).

The host is resolved once; the client connects to the address checked
(``fhir_adapters.fhir_client.FhirReadClient``, given this policy), so a
second DNS answer (rebinding) cannot redirect the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from fhir_adapters.safe_url import IpAddress, Origin, address, loopback_name

__all__ = ["REFUSED_KINDS", "FhirPolicy", "address", "address_kind", "loopback_name"]

#: Address kinds refused unless the origin is allowed explicitly, first match named in the log.
REFUSED_KINDS: tuple[tuple[str, Callable[[IpAddress], bool]], ...] = (
    ("unspecified", lambda ip: ip.is_unspecified),
    ("loopback", lambda ip: ip.is_loopback),
    ("link-local", lambda ip: ip.is_link_local),
    ("multicast", lambda ip: ip.is_multicast),
    ("private", lambda ip: ip.is_private),
    ("reserved", lambda ip: ip.is_reserved),
    ("not global", lambda ip: not ip.is_global),
)


def address_kind(ip: IpAddress) -> str | None:
    """The reason an address is not public, or None for a public one."""
    return next((kind for kind, test in REFUSED_KINDS if test(ip)), None)


@dataclass(frozen=True, slots=True)
class FhirPolicy:
    listed: frozenset[Origin] | None = None  # the client's fhirServers (None: any public https)
    allowed: frozenset[Origin] = frozenset()  # serve --fhir-allow: for every client
    loopback: bool = False  # serve --allow-http-fhir: loopback servers, http or https (tests)

    @classmethod
    def of(cls, listed: Iterable[Origin] | None, allowed: Iterable[Origin], loopback: bool) -> FhirPolicy:
        return cls(None if listed is None else frozenset(listed), frozenset(allowed), loopback)

    def explicit(self, origin: Origin) -> bool:
        return origin in self.allowed or (self.listed is not None and origin in self.listed)

    def before_resolving(self, origin: Origin) -> str | None:
        """Why this origin is refused whatever it resolves to, or None. Decided from the URL
        alone (no DNS lookup, no connection), so the caller may be told."""
        if self.listed is not None and not self.explicit(origin):
            return "is not among this client's fhirServers"
        if origin.scheme == "http" and not (self.loopback and loopback_name(origin.host)):
            return "is plain http"
        return None

    def after_resolving(self, origin: Origin, addresses: Sequence[str]) -> str | None:
        """Why these addresses are refused for this origin, or None (every one must pass)."""
        if not addresses:
            return "the host has no address"
        for text in addresses:
            kind = address_kind(address(text))
            if origin.scheme == "http" and kind != "loopback":
                return "plain http to an address that is not loopback"
            if kind is None or self.explicit(origin) or (kind == "loopback" and self.loopback):
                continue
            return f"{kind} address (list the origin in the client's fhirServers or --fhir-allow)"
        return None
