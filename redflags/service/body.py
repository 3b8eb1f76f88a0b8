"""What every endpoint with a body accepts: JSON, plain or FHIR, in UTF-8 (RFC 8259).

The size of a body is limited once for all endpoints, by ``limits.BodySizeLimit``.
"""

from __future__ import annotations

JSON_TYPES = frozenset({"application/json", "application/fhir+json"})


def media_type_problem(header: str | None, default: str | None = "application/json") -> str | None:
    """Why a Content-Type is refused (answer 415), or None; ``default`` stands for a missing one."""
    header = header or default
    if not header:
        return "no Content-Type: send application/fhir+json or application/json"
    kind, *params = (part.strip() for part in header.split(";"))
    if kind.lower() not in JSON_TYPES:
        return f"Content-Type {kind!r} not supported: send application/fhir+json or application/json"
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return f"charset {value.strip()!r} not supported: JSON is UTF-8"
    return None
