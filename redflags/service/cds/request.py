"""Read and check one CDS Hooks 2.0 service request: a bad request gets a message naming the field.

The hooks' context fields are those of the CDS Hooks library 1.0.1 (``hook-context-fields``):
their optionality and JSON type are checked here; ids that go into FHIR URLs must be FHIR ids.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_adapters import safe_url
from fhir_adapters.prefetch_read import is_bundle
from fhir_adapters.safe_url import UnsafeUrl


class CdsRequestError(ValueError):
    """The request does not follow CDS Hooks 2.0 or the hook's definition (answer 400)."""


@dataclass(frozen=True, slots=True)
class ContextField:
    name: str
    required: bool
    kind: type  # str, dict or list
    fhir_id: bool = False  # goes into a FHIR URL: must match the FHIR id syntax


_USER = ContextField("userId", True, str)
_PATIENT = ContextField("patientId", True, str, fhir_id=True)
_ENCOUNTER_OPTIONAL = ContextField("encounterId", False, str, fhir_id=True)
_ENCOUNTER_REQUIRED = ContextField("encounterId", True, str, fhir_id=True)
_DRAFT_ORDERS = ContextField("draftOrders", True, dict)

#: Context fields of the hooks redflags serves (CDS Hooks library 1.0.1).
HOOK_CONTEXT: dict[str, tuple[ContextField, ...]] = {
    "patient-view": (_USER, _PATIENT, _ENCOUNTER_OPTIONAL),
    "encounter-start": (_USER, _PATIENT, _ENCOUNTER_REQUIRED),
    "order-sign": (_USER, _PATIENT, _ENCOUNTER_OPTIONAL, _DRAFT_ORDERS),
}

#: Matched with ``fullmatch``: ``$`` with ``match`` would accept a trailing newline.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_USER_REF = re.compile(r"[A-Za-z]+/[A-Za-z0-9\-.]{1,64}")
_ABSOLUTE = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://")  # a prefix: match
_JSON_TYPE = {str: "a string", dict: "an object", list: "an array"}
#: What an HTTP header can carry as a bearer token (visible ASCII, no space): anything else only
#: failed later, in the HTTP client, as if fhirServer had broken off the exchange.
_HEADER_TOKEN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class FhirAuthorization:
    """The OAuth 2.0 bearer token for ``fhirServer``: used for this call only, never shown."""

    access_token: str = field(repr=False)
    token_type: str
    scope: str
    subject: str
    expires_in: int


@dataclass(frozen=True, slots=True)
class CdsRequest:
    hook: str
    hook_instance: str
    context: Mapping[str, Any]
    fhir_server: str | None = None
    authorization: FhirAuthorization | None = None
    prefetch: Mapping[str, Any] = field(default_factory=dict)

    @property
    def patient_id(self) -> str:
        return self.context["patientId"]


def _string(body: Mapping[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise CdsRequestError(f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise CdsRequestError(f"{name} must be a non-empty string")
    return value


def _fhir_server(body: Mapping[str, Any]) -> str | None:
    url = _string(body, "fhirServer", required=False)
    if url is None:
        return None
    if not _ABSOLUTE.match(url):
        raise CdsRequestError("fhirServer must be an absolute http(s) URL")
    try:  # checked as the HTTP client will read it (fhir_adapters.safe_url)
        parts = safe_url.parse(url)
    except UnsafeUrl as exc:
        raise CdsRequestError(f"fhirServer {exc}") from None
    if parts.query is not None or parts.fragment is not None:
        raise CdsRequestError("fhirServer must be a FHIR base URL (no query, fragment or credentials)")
    return url.rstrip("/")


def _authorization(body: Mapping[str, Any], server: str | None) -> FhirAuthorization | None:
    auth = body.get("fhirAuthorization")
    if auth is None:
        return None
    if not isinstance(auth, dict):
        raise CdsRequestError("fhirAuthorization must be an object")
    if server is None:
        raise CdsRequestError("fhirServer is required when fhirAuthorization is given")
    fields = {}
    for name in ("access_token", "token_type", "scope", "subject"):
        value = auth.get(name)
        if not isinstance(value, str) or not value:
            raise CdsRequestError(f"fhirAuthorization.{name} is required (a non-empty string)")
        fields[name] = value
    if not _HEADER_TOKEN.fullmatch(fields["access_token"]):  # never quoted: it is a credential
        raise CdsRequestError("fhirAuthorization.access_token must be visible ASCII without spaces")
    if fields["token_type"].lower() != "bearer":
        raise CdsRequestError("fhirAuthorization.token_type must be 'Bearer'")
    expires = auth.get("expires_in")
    if not isinstance(expires, int) or isinstance(expires, bool) or expires < 0:
        raise CdsRequestError("fhirAuthorization.expires_in is required (a number of seconds)")
    return FhirAuthorization(expires_in=expires, **fields)


def _context(body: Mapping[str, Any], hook: str) -> dict[str, Any]:
    context = body.get("context")
    if not isinstance(context, dict):
        raise CdsRequestError("context is required (an object)")
    for spec in HOOK_CONTEXT[hook]:
        value = context.get(spec.name)
        where = f"context.{spec.name}"
        if value is None:
            if spec.required:
                raise CdsRequestError(f"{where} is required for hook {hook}")
            continue
        if not isinstance(value, spec.kind):
            raise CdsRequestError(f"{where} must be {_JSON_TYPE[spec.kind]}")
        if spec.fhir_id and not _FHIR_ID.fullmatch(value):
            raise CdsRequestError(f"{where} is not a FHIR id (1-64 of A-Z a-z 0-9 - .)")
        if spec.kind is dict and not is_bundle(value):
            raise CdsRequestError(f"{where} must be a FHIR Bundle")
    if not _USER_REF.fullmatch(context["userId"]):
        raise CdsRequestError("context.userId must be a reference like Practitioner/123")
    return context


def parse(body: object, hook: str) -> CdsRequest:
    """Check a decoded request body for a service of ``hook``; raise CdsRequestError if wrong."""
    if not isinstance(body, dict):
        raise CdsRequestError("the request body must be a JSON object")
    sent_hook = _string(body, "hook")
    if sent_hook != hook:
        raise CdsRequestError(f"hook {sent_hook!r} does not match this service (it serves {hook!r})")
    instance = _string(body, "hookInstance")
    if not _UUID.fullmatch(instance or ""):
        raise CdsRequestError("hookInstance must be a UUID (8-4-4-4-12 hexadecimal digits)")
    server = _fhir_server(body)
    authorization = _authorization(body, server)
    context = _context(body, hook)
    prefetch = body.get("prefetch")
    if prefetch is None:
        prefetch = {}
    elif not isinstance(prefetch, dict):
        raise CdsRequestError("prefetch must be an object")
    extension = body.get("extension")
    if extension is not None and not isinstance(extension, dict):
        raise CdsRequestError("extension must be an object")
    return CdsRequest(sent_hook, instance, context, server, authorization, prefetch)
