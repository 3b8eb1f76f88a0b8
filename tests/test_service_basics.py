"""The service starts as `redflags serve`, answers /healthz and /docs, refuses to run open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

from .service_harness import ROOT, running_service


def test_health_docs_and_request_ids(tmp_path: Path) -> None:
    with running_service(tmp_path, "--allow-unauthenticated") as service:
        health = requests.get(f"{service.url}/healthz", timeout=5)
        assert health.status_code == 200 and len(health.json()["rules"]) == 12
        rid = health.headers["X-Request-ID"]
        assert requests.get(f"{service.url}/docs", timeout=5).status_code == 200
        assert "/healthz" in requests.get(f"{service.url}/openapi.json", timeout=5).json()["paths"]
    log = service.log()
    assert f'"request_id": "{rid}"' in log and '"event": "unauthenticated"' in log


def test_refuses_to_start_without_authentication() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "serve", "--port", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "refusing to serve without authentication" in done.stderr


def test_cors_is_configurable(tmp_path: Path) -> None:
    origin = "https://ehr.example.org"
    with running_service(tmp_path, "--allow-unauthenticated", "--cors-origin", origin) as service:
        preflight = requests.options(
            f"{service.url}/cds-services/redflags-patient-view",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "authorization,content-type"},
            timeout=5,
        )  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == origin
        other = requests.get(
            f"{service.url}/cds-services", headers={"Origin": "https://evil.example"}, timeout=5
        )
        assert "Access-Control-Allow-Origin" not in other.headers
