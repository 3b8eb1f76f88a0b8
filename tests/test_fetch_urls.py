"""URL safety (``fhir_adapters.safe_url``), ``fhirServers`` in the clients file, ``--fhir-allow``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from fhir_adapters import safe_url
from fhir_adapters.safe_url import Origin, UnsafeUrl
from redflags.service.auth.trusted_clients import ClientsError, TrustedClients
from redflags.service.cds.request import CdsRequestError, parse
from redflags.service.settings import ENV, ServiceSettings

from .auth_helpers import public_jwk
from .service_harness import ROOT


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:81\\@127.0.0.1:80/x",
        "http://127.0.0.1:80@127.0.0.2:81/x",
        "http://user:pw@ehr.example.org/x",
        "http://ehr.example.org /x",
        "http://ehr.example.org/\tx",
        "http://ehr.example.org/x\n",
        "http://ehr.example.org/\x7f",
        "http://ehr.example.org/é",
        "http://\uff45hr.example.org/",  # fullwidth e: IDNA would fold it to ASCII
        "javascript:alert(1)",
        "file:///etc/passwd",
        "//ehr.example.org/x",
        "http://ehr.example.org:99999/x",
        "http://ehr.example.org:0/x",
        "http://[::1/x",
        "http:///x",
        "",
    ],
)
def test_unsafe_urls_are_refused_without_quoting_them(url: str) -> None:
    with pytest.raises(UnsafeUrl) as caught:
        safe_url.parse(url)
    assert url.strip() not in str(caught.value) or not url.strip()


def test_the_origin_is_the_one_the_http_library_connects_to() -> None:
    """What requests/urllib3 would connect to for a URL is what ``origin`` says (or it refuses)."""
    for url, expected in [
        ("HTTPS://EHR.example.org/fhir", Origin("https", "ehr.example.org", 443)),
        ("http://ehr.example.org:8080/fhir", Origin("http", "ehr.example.org", 8080)),
        ("http://127.0.0.1/%5C@127.0.0.2/x", Origin("http", "127.0.0.1", 80)),
        ("http://[::1]:8/x", Origin("http", "::1", 8)),
    ]:
        assert safe_url.origin(url) == expected
        prepared = requests.Request("GET", url).prepare().url
        assert safe_url.origin(prepared) == expected
    assert str(Origin("http", "::1", 8)) == "http://[::1]:8"


def test_origins_in_configuration_are_origins_only() -> None:
    assert safe_url.parse_origin("https://ehr.example.org") == Origin("https", "ehr.example.org", 443)
    assert safe_url.parse_origin("https://ehr.example.org:443/") == Origin("https", "ehr.example.org", 443)
    for text in ("https://ehr.example.org/fhir", "https://ehr.example.org?x", "ehr.example.org", 7):
        with pytest.raises(UnsafeUrl):
            safe_url.parse_origin(text)


def clients_with(servers: Any) -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP384R1())
    return {
        "clients": [{"iss": "https://ehr/", "jwks": {"keys": [public_jwk(key, "k")]}, "fhirServers": servers}]
    }


def test_fhir_servers_in_the_clients_file() -> None:
    clients = TrustedClients.from_data(clients_with(["https://EHR.example.org", "http://127.0.0.1:8080"]))
    found = clients.get("https://ehr/")
    assert found is not None and found.fhir_servers == (
        Origin("https", "ehr.example.org", 443),
        Origin("http", "127.0.0.1", 8080),
    )
    for bad, message in [
        ("https://ehr.example.org", "fhirServers must be an array"),
        (["http://ehr.example.org"], "must be https"),
        (["https://ehr.example.org/fhir"], "is not an origin"),
        (["https://u@ehr.example.org"], "holds credentials"),
    ]:
        with pytest.raises(ClientsError, match=message):
            TrustedClients.from_data(clients_with(bad))


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ("http://127.0.0.2:81\\@127.0.0.1:80", "fhirServer holds whitespace, a backslash"),
        ("https://ehr.example.org:99999", "fhirServer is not a valid URL"),
        ("https://[::1", "fhirServer is not a valid URL"),
        ("https://u@ehr.example.org", "fhirServer holds credentials"),
        ("ehr.example.org", "fhirServer must be an absolute http(s) URL"),
    ],
)
def test_a_fhir_server_the_client_would_misread_is_a_400(server: str, message: str) -> None:
    body = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "fhirServer": server,
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
    }
    with pytest.raises(CdsRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(body, "patient-view")


def test_serve_refuses_a_bad_fhir_allow_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "serve", "--allow-unauthenticated", "--no-state",
         "--feedback-db", str(tmp_path / "f.sqlite"), "--fhir-allow", "https://ehr.example.org/fhir"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--fhir-allow" in done.stderr and "is not an origin" in done.stderr


def test_settings_carry_the_new_fields_to_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "")  # restored after the test
    settings = ServiceSettings(fhir_allow=("https://ehr.example.org",), fhir_max_bytes=4096)
    settings.to_env()
    assert ServiceSettings.from_env() == settings
