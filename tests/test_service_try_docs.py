"""/docs and /redoc work air-gapped (every asset from the service itself), the OpenAPI document
lets "Try it out" send a bearer token, and every error answer is an OperationOutcome: the
CDS endpoints' 401 (CDS Hooks 2.0 defines no error body; RFC 6750's 401 with WWW-Authenticate:
Bearer, body the OperationOutcome every other CDS error has) and $evaluate's (FHIR)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from .service_harness import ROOT, Service
from .try_helpers import ISS, mint, service

__all__ = ["service"]  # the fixture, shared with test_service_try_examples

EXAMPLES = ROOT / "examples" / "service"
CDS = "/cds-services/redflags-patient-view"
EVALUATE = "/fhir/$evaluate"
ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']|(https?://[^\s"'<>)]+)""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_only_assets_the_service_serves(service: Service, page: str) -> None:
    html = requests.get(service.url + page, timeout=10)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    urls = [next(g for g in m.groups() if g) for m in ASSET.finditer(html.text)]
    assert urls, html.text
    for url in urls:
        absolute = urljoin(service.url + page, url)
        assert urlsplit(absolute).netloc == urlsplit(service.url).netloc, f"{page} loads {url} from elsewhere"
        asset = requests.get(absolute, timeout=10)
        assert asset.status_code == 200 and len(asset.content) > 0, url
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts and all(
        len(requests.get(urljoin(service.url, u), timeout=10).content) > 100_000 for u in scripts
    )


def test_the_openapi_document_declares_the_bearer_schemes_of_each_endpoint(service: Service) -> None:
    schema = requests.get(f"{service.url}/openapi.json", timeout=10).json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["cdsClientJWT"] == {**schemes["cdsClientJWT"], "type": "http", "scheme": "bearer"}
    assert schemes["cdsClientJWT"]["bearerFormat"] == "JWT"
    assert schemes["staticToken"]["scheme"] == "bearer"
    paths = schema["paths"]
    assert paths["/cds-services/{service_id}"]["post"]["security"] == [{"cdsClientJWT": []}]
    assert paths["/cds-services/{service_id}/feedback"]["post"]["security"] == [{"cdsClientJWT": []}]
    assert paths[EVALUATE]["post"]["security"] == [{"cdsClientJWT": []}, {"staticToken": []}]
    assert "security" not in paths["/cds-services"]["get"] and "security" not in paths["/healthz"]["get"]


def _refusals(service: Service, path: str, media: str) -> list[requests.Response]:
    url = service.url + path
    body = b"{}"
    replayed = mint(url)
    requests.post(
        url, data=body, headers={"Content-Type": media, "Authorization": f"Bearer {replayed}"}, timeout=10
    )
    credentials = [None, "not-a-token", replayed, mint(service.url + "/elsewhere"), "a.b.c"]
    answers = []
    for credential in credentials:
        headers = {"Content-Type": media, **({"Authorization": f"Bearer {credential}"} if credential else {})}
        answers.append(requests.post(url, data=body, headers=headers, timeout=10))
    answers.append(requests.post(url, data=body, headers={"Authorization": "Basic eDp5"}, timeout=10))
    return answers


@pytest.mark.parametrize(
    ("path", "media", "answer_type"),
    [
        (CDS, "application/json", "application/json"),  # CDS Hooks call
        (CDS + "/feedback", "application/json", "application/json"),  # CDS Hooks feedback
        (EVALUATE, "application/fhir+json", "application/fhir+json"),  # FHIR operation
    ],
)
def test_every_401_is_the_same_operation_outcome(
    service: Service, path: str, media: str, answer_type: str
) -> None:
    answers = _refusals(service, path, media)
    for answer in answers:
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert answer.headers["content-type"].split(";")[0] == answer_type
        assert answer.content == answers[0].content  # nothing tells one cause from another
    (issue,) = answers[0].json()["issue"]
    assert answers[0].json()["resourceType"] == "OperationOutcome"
    assert issue["severity"] == "error" and issue["code"] == "login" and "Bearer" in issue["diagnostics"]
    assert ISS not in answers[0].text


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/no-such-path", 404, "not-found"),
        ("GET", CDS, 405, "not-supported"),
        ("DELETE", "/cds-services", 405, "not-supported"),
        ("GET", "/fhir/no-such-operation", 404, "not-found"),
    ],
)
def test_routing_errors_are_operation_outcomes_too(
    service: Service, method: str, path: str, status: int, code: str
) -> None:
    answer = requests.request(method, service.url + path, timeout=10)
    assert answer.status_code == status
    body = json.loads(answer.content)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == code
    fhir = path.startswith("/fhir")
    assert answer.headers["content-type"].startswith("application/fhir+json" if fhir else "application/json")


def test_the_docs_assets_come_from_an_installed_package() -> None:
    from redflags.service.http.api_docs import STATIC_DIR

    assert {"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"} <= {
        p.name for p in Path(STATIC_DIR).iterdir()
    }
