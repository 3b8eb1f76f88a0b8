"""One ``redflags serve`` for several sites (``--site NAME=FILE``), chosen by a path prefix.

Two sites that differ in one threshold answer the same record differently, over real HTTP,
from the same engine processes; an unknown site is a 404 OperationOutcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from redflags.service import sites
from redflags.service.engine_host import call, engine_pool

from . import multiconf_helpers
from .cds_helpers import PATIENT_VIEW, prefetch_for, request, resources_of
from .cli_helpers import run
from .conftest import FIXTURES
from .evaluate_helpers import FHIR_JSON, alerts
from .service_harness import Service, free_port, running_service

NOW = "2025-03-10T12:00:00Z"
#: Post-void residual 420 mL: critical with the default 200 mL threshold, nothing at 450 mL.
PVR = FIXTURES / "cauda_equina_syndrome" / "tierA-pvr-420mL-leg-numbness.json"
PATIENT = "Patient/ces-a-pvr-ml"
STRICTER = "[params.cauda_equina_syndrome]\npvr_ml = 450\n"


def _configs(tmp: Path) -> tuple[Path, Path]:
    (tmp / "plain.toml").write_text("# every default\n", encoding="utf-8")
    (tmp / "stricter.toml").write_text(STRICTER, encoding="utf-8")
    return tmp / "plain.toml", tmp / "stricter.toml"


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("multiconf")
    plain, stricter = _configs(tmp)
    args = ("--allow-unauthenticated", "--now", NOW, "--no-state", "--workers", "2")
    with running_service(tmp, *args, "--site", f"plain={plain}", "--site", f"strict={stricter}") as service:
        yield service


def _evaluate(url: str) -> requests.Response:
    return requests.post(url, data=PVR.read_bytes(), headers={"Content-Type": FHIR_JSON}, timeout=30)


def _cards(service: Service, site: str) -> list[dict]:
    resources = resources_of(PVR)
    body = request("patient-view", PATIENT.split("/")[1], prefetch_for(resources))
    answer = requests.post(f"{service.url}/sites/{site}/cds-services/{PATIENT_VIEW}", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["cards"]


def test_two_sites_answer_the_same_record_under_their_own_threshold(two_sites: Service) -> None:
    plain = _evaluate(f"{two_sites.url}/sites/plain/fhir/$evaluate")
    strict = _evaluate(f"{two_sites.url}/sites/strict/fhir/$evaluate")
    assert plain.status_code == strict.status_code == 200, (plain.text, strict.text)
    assert alerts(plain.json()) == {PATIENT: {"cauda_equina_syndrome": "critical"}}
    assert alerts(strict.json()) == {}
    assert len(_cards(two_sites, "plain")) == 1 and _cards(two_sites, "strict") == []
    lines = [json.loads(line) for line in two_sites.log().splitlines() if line.startswith("{")]
    assert {(x.get("site"), x["rule"]) for x in lines if x.get("event") == "alert"} == {
        ("plain", "cauda_equina_syndrome")  # the engine process's log line names the site
    }


def test_discovery_lists_each_site_s_services(two_sites: Service) -> None:
    listed = requests.get(f"{two_sites.url}/sites", timeout=10).json()
    assert [s["name"] for s in listed["sites"]] == ["plain", "strict"]
    assert listed["sites"][1]["cds-services"] == "/sites/strict/cds-services"
    for site in ("plain", "strict"):
        services = requests.get(f"{two_sites.url}/sites/{site}/cds-services", timeout=10).json()["services"]
        assert PATIENT_VIEW in {s["id"] for s in services}


@pytest.mark.parametrize(
    ("path", "media_type", "says"),
    [
        ("/sites/nowhere/fhir/$evaluate", FHIR_JSON, "no site 'nowhere': this service serves plain, strict"),
        (f"/sites/nowhere/cds-services/{PATIENT_VIEW}", "application/json", "no site 'nowhere'"),
        ("/sites/plain/metrics", "application/json", "site 'plain' serves /sites/plain/cds-services"),
        ("/fhir/$evaluate", FHIR_JSON, "this service serves several sites (plain, strict)"),
        (f"/cds-services/{PATIENT_VIEW}", "application/json", "call /sites/{site}/cds-services/"),
    ],
)
def test_an_unknown_site_is_a_404_operation_outcome(
    two_sites: Service, path: str, media_type: str, says: str
) -> None:
    answer = _evaluate(f"{two_sites.url}{path}")
    assert answer.status_code == 404 and answer.headers["content-type"].startswith(media_type)
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    assert says in body["issue"][0]["diagnostics"] and body["issue"][0]["code"] == "not-found"
    assert requests.get(f"{two_sites.url}/healthz", timeout=10).status_code == 200  # shared paths stay


def test_with_config_the_unprefixed_paths_serve_it(tmp_path: Path) -> None:
    plain, stricter = _configs(tmp_path)
    args = ("--allow-unauthenticated", "--now", NOW, "--no-state", "--config", str(stricter))
    with running_service(tmp_path, *args, "--site", f"plain={plain}") as service:
        assert alerts(_evaluate(f"{service.url}/fhir/$evaluate").json()) == {}
        assert alerts(_evaluate(f"{service.url}/sites/plain/fhir/$evaluate").json()) == {
            PATIENT: {"cauda_equina_syndrome": "critical"}
        }


def test_every_site_is_compiled_in_the_same_engine_process(tmp_path: Path) -> None:
    plain, stricter = _configs(tmp_path)

    async def ask() -> list[tuple[int, float, str]]:
        pool = engine_pool(1, None, "warning", site_configs={"plain": str(plain), "strict": str(stricter)})
        await pool.start()
        try:
            answers = []
            for site in ("plain", "strict", "plain"):
                token = sites._site.set(site)  # what SitePrefix sets for /sites/{site}/...
                try:
                    answers.append(await call(pool, multiconf_helpers.which_rules))
                finally:
                    sites._site.reset(token)
            return answers
        finally:
            await pool.close()

    answers = asyncio.run(ask())
    assert len({a[0] for a in answers}) == 1  # one process
    assert [a[1:] for a in answers] == [(200, "redflags"), (450, "redflags_1"), (200, "redflags")]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("plain", "expected NAME=FILE"),
        ("no/slash=x.toml", "a site name is 1-64 letters"),
    ],
)
def test_a_bad_site_option_is_one_line(tmp_path: Path, value: str, says: str) -> None:
    done = run("serve", "--allow-unauthenticated", "--no-state", "--port", "0", "--site", value)
    assert done.returncode == 2 and says in done.stderr


def test_a_site_configuration_out_of_range_stops_serve(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[params.cauda_equina_syndrome]\npvr_ml = 5000\n", encoding="utf-8")
    done = run("serve", "--allow-unauthenticated", "--no-state", "--port", "0", "--site", f"bad={bad}")
    assert done.returncode == 2 and "plausible range" in done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("{")]  # not log lines
    assert len(errors) == 1 and errors[0].startswith(f"Error: {bad}: "), done.stderr


def test_one_site_never_withdraws_another_site_s_alert(tmp_path: Path) -> None:
    """Same caller, same patient, two sites: each site keeps its own alert ledger (its tenant)."""
    plain, stricter = _configs(tmp_path)
    state = tmp_path / "state.sqlite"
    nowhere = f"http://127.0.0.1:{free_port()}"  # the outbox keeps its items pending
    args = ("--allow-unauthenticated", "--now", NOW, "--state", str(state), "--fhir-server", nowhere)
    with running_service(
        tmp_path, *args, "--site", f"plain={plain}", "--site", f"strict={stricter}"
    ) as service:
        assert alerts(_evaluate(f"{service.url}/sites/plain/fhir/$evaluate").json())  # raised
        assert alerts(_evaluate(f"{service.url}/sites/strict/fhir/$evaluate").json()) == {}
    listed = run("outbox", "list", "--state", state, "--json")
    assert listed.returncode == 0, listed.stderr
    items = [(i["tenant"], i["rule"], i["change"]) for i in json.loads(listed.stdout)]
    assert items == [("default site:plain", "cauda_equina_syndrome", "raised")]


@pytest.mark.parametrize(
    ("path", "data", "status"),
    [
        ("/sites/plain/fhir/nothing", b"{}", 404),  # no such route (errors.http_error)
        ("/sites/plain/fhir/$evaluate", b" " * (11 * 1024 * 1024), 413),  # limits.BodySizeLimit
    ],
)
def test_a_site_s_fhir_errors_are_fhir_json(two_sites: Service, path: str, data: bytes, status: int) -> None:
    answer = requests.post(
        f"{two_sites.url}{path}", data=data, headers={"Content-Type": FHIR_JSON}, timeout=30
    )
    assert answer.status_code == status and answer.headers["content-type"].startswith(FHIR_JSON)
    assert answer.json()["resourceType"] == "OperationOutcome"
