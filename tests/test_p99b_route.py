"""The CDS service call is served by a plain Starlette route (no FastAPI dependency solving per
call), still documented in the OpenAPI document, and still labelled by its route template."""

from __future__ import annotations

from fastapi.routing import APIRoute
from starlette.routing import Match

from redflags.service.app import create_app
from redflags.service.settings import ServiceSettings

CALL = "/cds-services/{service_id}"


def _scope(method: str, path: str) -> dict[str, object]:
    return {"type": "http", "method": method, "path": path, "root_path": "", "path_params": {}}


def test_the_call_is_served_by_a_plain_route_that_names_its_template() -> None:
    app = create_app(ServiceSettings(allow_unauthenticated=True))
    for route in app.router.routes:
        match, child = route.matches(_scope("POST", "/cds-services/redflags-patient-view"))
        if match is Match.FULL:
            break
    assert not isinstance(route, APIRoute)
    assert child["route"].path == CALL and child["path_params"] == {"service_id": "redflags-patient-view"}
    match, child = route.matches(_scope("GET", "/cds-services/redflags-patient-view"))
    assert match is Match.PARTIAL and child["route"].path == CALL  # 405, labelled as before


def test_the_call_stays_in_the_openapi_document_with_its_security_and_body() -> None:
    post = create_app(ServiceSettings(allow_unauthenticated=True)).openapi()["paths"][CALL]["post"]
    assert post["summary"] == "Call a CDS service: cards for the patient in context"
    assert post["security"] == [{"cdsClientJWT": []}]
    assert [p["name"] for p in post["parameters"]] == ["service_id"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "hook",
        "hookInstance",
        "context",
    ]
