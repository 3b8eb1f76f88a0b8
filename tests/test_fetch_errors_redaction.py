"""A FHIR server's diagnostics are logged and stored with an outbox item at rest: whatever of our
credentials the server echoes (an Authorization header, a JWT, an opaque token) is blanked, while
the ids that help an operator stay."""

from __future__ import annotations

from fhir_adapters.fhir_client import _diagnostics

JWT = "eyJhbGciOiJSUzM4NCJ9.eyJpc3MiOiJyZWRmbGFncyJ9.c2lnbmF0dXJlLWJ5dGVz"
OPAQUE = "k9Qw-7r_ZpL2vXy8Tn3BcD5fGh6JmN1sRt4UwE0aYqI"


def _said(text: str) -> str:
    return _diagnostics({"resourceType": "OperationOutcome", "issue": [{"diagnostics": text}]})


def test_an_echoed_credential_is_never_kept() -> None:
    for echoed in (f"Bearer {OPAQUE}", f"bearer {JWT}", JWT, OPAQUE, f"Basic {OPAQUE[:12]}"):
        said = _said(f"Unauthorized: the request carried {echoed} and was refused")
        secret = echoed.split()[-1]
        assert secret not in said and "[redacted]" in said, said
        assert said.startswith("Unauthorized: the request carried")


def test_ids_an_operator_needs_are_kept() -> None:
    said = _said("Flag/5f0c8a52-5b1e-4a53-9d0e-0c0fcb3a2f11 version 3 conflicts with Patient/example")
    assert said == "Flag/5f0c8a52-5b1e-4a53-9d0e-0c0fcb3a2f11 version 3 conflicts with Patient/example"
