"""Whose data a call reads and writes: the tenant, from the authenticated client.

Everything the service keeps (history, alert ledger, outbox) is keyed by tenant + patient, so
``Patient/1`` of one EHR is never mixed with ``Patient/1`` of another, and a caller can neither
read nor change another caller's records. The tenant is

- for ``$evaluate``: the caller, i.e. the name of its static token (``token:<name>``) or the
  ``iss`` of its CDS client JWT;
- for CDS Hooks calls: the JWT ``iss``, ``|``, and the base URL of the call's ``fhirServer``
  (``scheme://host:port/path``, normalised; empty without one): one client serving two FHIR
  servers keeps two records, as the two servers' patient ids name different people. The path
  counts: one host often serves several stores (``.../fhirStores/A/fhir``, ``/fhir/TENANT``);
- with ``--allow-unauthenticated``: ``default`` (the tenant of ``redflags replay``), plus the
  ``fhirServer`` base on CDS calls as above.

A CDS tenant always holds one ``|`` more than its client part and bases hold none (a ``|`` in
the path is written ``%7C``), so two different (client, server) pairs never give one tenant.
A server without a path keeps the tenant it had when only the origin counted (0.4). The HTTP
process derives the client part (``tenant_dependency``); the engine process adds the base once it
has decoded the request.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str | None) -> str:
    """``scheme://host[:port]`` of ``url``, lower case, default port left out; "" for None."""
    if not url:
        return ""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    return f"{scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS.get(scheme) else "")


def server_base(url: str | None) -> str:
    """``origin(url)`` and its path, without a trailing ``/``, query or fragment; "" for None.

    The path is kept as sent (paths are case-sensitive), but ``|`` is escaped so that the tenant
    stays unambiguous."""
    if not url:
        return ""
    path = urlsplit(url).path.rstrip("/").replace("|", "%7C")
    return origin(url) + path


def cds_tenant(principal: str, fhir_server: str | None) -> str:
    """The tenant of a CDS Hooks call by ``principal`` naming ``fhir_server``."""
    return f"{principal}|{server_base(fhir_server)}"
