"""The service reading a hostile or faulty ``fhirServer``, over real HTTP on loopback.

Each test stands for an attack or a fault seen on the live service (issue 10, items 2, 5, 8, 9,
12): a token sent to another host, a call kept open by a dripping server, a loopback or
unlisted server read on a caller's say-so, an unbounded record, a library error as a 500.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from redflags.service.cds.prefetch import UNAVAILABLE

from .auth_helpers import claims, public_jwk, token
from .cds_helpers import PATIENT_VIEW, TOKEN, prefetch_for, request, resources_of, vignette_request
from .cds_helpers import VIGNETTES as VIGNETTE_DIR
from .fetch_servers import (
    RawServer,
    answer_json,
    cut_body,
    drip,
    endless,
    garbage_status,
    record,
    searchset,
    silent_body,
)
from .service_harness import Service, running_service

NOW = "2025-03-10T12:00:00Z"
BUDGET_S = 2.0
#: Generous slack over the configured budget: a loaded CI machine, process scheduling, the engine.
MARGIN_S = 8.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("fetch")
    args = ("--allow-unauthenticated", "--allow-http-fhir", "--now", NOW, "--fhir-timeout", str(BUDGET_S))
    with running_service(tmp, *args) as svc:
        yield svc


def call(service: Service, service_id: str, body: Any, timeout: float = 30, **kw: Any) -> requests.Response:
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    url = f"{service.url}/cds-services/{service_id}"
    return requests.post(url, data=json.dumps(body), headers=headers, timeout=timeout, **kw)


def with_server(body: dict[str, Any], server: str) -> dict[str, Any]:
    return {**body, "fhirServer": server, "fhirAuthorization": TOKEN}


def paged_prefetch(next_url: str) -> dict[str, Any]:
    """V01's full prefetch whose Observation page links to ``next_url``."""
    prefetch = prefetch_for(resources_of(VIGNETTE_DIR / "V01-ces-positive.json"))
    prefetch["Observation"]["link"] = [{"relation": "next", "url": next_url}]
    return prefetch


def assert_generic_412(answer: requests.Response) -> None:
    assert answer.status_code == 412, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "incomplete", "diagnostics": UNAVAILABLE}],
    }


# ------------------------------------------------------------------ item 2: the token stays home


@pytest.mark.parametrize(
    "link",
    [
        "http://127.0.0.2:{other}\\@127.0.0.1:{ehr}/fhir/Observation?page=2",  # the confirmed leak
        "http://127.0.0.2:{other}/%5C@127.0.0.1:{ehr}/fhir/Observation?page=2",
        "http://127.0.0.1:{ehr}@127.0.0.2:{other}/fhir/Observation?page=2",
        "http://user@127.0.0.1:{ehr}/fhir/Observation?page=2",
        "//127.0.0.2:{other}/fhir/Observation?page=2",
        "http://127.0.0.2:{other}\t@127.0.0.1:{ehr}/fhir/Observation?page=2",
        " http://127.0.0.2:{other}/fhir/Observation?page=2",
        "http://127.0.0.2:{other}#@127.0.0.1:{ehr}/fhir/Observation?page=2",
        "http://127.0.0.2:{other}?@127.0.0.1:{ehr}/fhir/Observation?page=2",
        "HTTP://127.0.0.2:{other}/fhir/Observation?page=2",
    ],
)
def test_a_next_link_never_takes_the_token_to_another_host(service: Service, link: str) -> None:
    with (
        RawServer(answer_json(searchset([]))) as ehr,
        RawServer(answer_json(searchset([])), "127.0.0.2") as other,
    ):
        url = link.format(ehr=ehr.port, other=other.port)
        body = with_server(request("patient-view", "v01", paged_prefetch(url)), f"{ehr.url}/fhir")
        answer = call(service, PATIENT_VIEW, body)
        assert answer.status_code == 412, answer.text
        assert other.accepted == 0 and other.hits == []
        assert ehr.hits == []
    assert TOKEN["access_token"] not in service.log()


def test_a_next_link_on_the_fhir_server_is_followed_with_the_token(service: Service) -> None:
    with RawServer(answer_json(searchset([]))) as ehr:
        body = with_server(
            request("patient-view", "v01", paged_prefetch(f"{ehr.url}/fhir/Observation?page=2")),
            f"{ehr.url}/fhir",
        )
        assert call(service, PATIENT_VIEW, body).status_code == 200
    assert [(h.path, h.headers.get("authorization")) for h in ehr.hits] == [
        ("/fhir/Observation?page=2", f"Bearer {TOKEN['access_token']}")
    ]
    assert ehr.hits[0].headers["host"] == f"127.0.0.1:{ehr.port}"


# ------------------------------------------------------------------ item 5: one deadline


@pytest.mark.parametrize("in_head", [False, True], ids=["body", "headers"])
def test_a_dripping_server_cannot_keep_a_call_past_its_budget(service: Service, in_head: bool) -> None:
    """A byte every 0.5 s never trips a socket read timeout; the call's deadline still holds."""
    with RawServer(drip(0.5, in_head=in_head)) as slow:
        started = time.monotonic()
        answer = call(
            service,
            PATIENT_VIEW,
            with_server(request("patient-view", "v01"), slow.url),
            timeout=BUDGET_S + MARGIN_S,
        )
        elapsed = time.monotonic() - started
        assert_generic_412(answer)
        assert elapsed < BUDGET_S + MARGIN_S
        assert slow.wait(lambda s: s.open == 0, timeout=MARGIN_S)  # the service hung up


# ------------------------------------------------------------------ item 12: errors are JSON


@pytest.mark.parametrize(
    "respond",
    [cut_body, silent_body, garbage_status],
    ids=["protocol-error", "read-timeout-in-body", "bad-status-line"],
)
def test_a_broken_exchange_is_the_generic_412(service: Service, respond: Any) -> None:
    with RawServer(respond) as broken:
        answer = call(service, PATIENT_VIEW, with_server(request("patient-view", "v01"), broken.url))
        assert_generic_412(answer)


@pytest.mark.parametrize(
    "link",
    [
        "http://127.0.0.1:99999/fhir/Observation?page=2",
        "http://[::1/fhir/Observation?page=2",
        "http://127.0.0.1:{ehr}/fhir/Observation?page=2 x",
        "http://127.0.0.1:-1/fhir",
        "ftp://127.0.0.1:{ehr}/fhir/Observation",
        "http://:{ehr}/fhir",
        "http://127.0.0.1:{ehr}/fhir/\x00",
        "http://127.0.0.1:{ehr}/fhir/é",
    ],
)
def test_an_invalid_next_link_is_the_generic_412(service: Service, link: str) -> None:
    with RawServer(answer_json(searchset([]))) as ehr:
        url = link.format(ehr=ehr.port)
        body = with_server(request("patient-view", "v01", paged_prefetch(url)), ehr.url)
        assert_generic_412(call(service, PATIENT_VIEW, body))
        assert ehr.hits == []


@pytest.mark.parametrize("server", ["http://[::1", "http://127.0.0.1:99999", "http://a b", "http://h\\@x"])
def test_an_invalid_fhir_server_is_a_400_naming_it(service: Service, server: str) -> None:
    answer = call(service, PATIENT_VIEW, with_server(request("patient-view", "v01"), server))
    assert answer.status_code == 400, answer.text
    assert answer.json()["issue"][0]["diagnostics"].startswith("fhirServer")


# ------------------------------------------------------------------ item 8: which servers


def test_loopback_is_refused_without_being_allowed_and_read_when_allowed(tmp_path: Path) -> None:
    """https on loopback was read on the caller's say-so; now only when allowed, never touched else."""
    with RawServer(answer_json(searchset([]))) as local:
        server = f"https://127.0.0.1:{local.port}"
        with running_service(tmp_path, "--allow-unauthenticated", "--now", NOW) as svc:
            assert_generic_412(call(svc, PATIENT_VIEW, with_server(request("patient-view", "v01"), server)))
            assert local.accepted == 0
            assert "loopback address" in svc.log()
        allow = ("--fhir-allow", server)
        with running_service(tmp_path, "--allow-unauthenticated", "--now", NOW, *allow) as svc:
            assert_generic_412(call(svc, PATIENT_VIEW, with_server(request("patient-view", "v01"), server)))
            assert local.accepted >= 1  # allowed: connected (and the TLS handshake failed)


def test_a_client_reads_only_its_listed_fhir_servers(tmp_path: Path) -> None:
    listed_key, other_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    with RawServer(answer_json(record)) as mine, RawServer(answer_json(record)) as elsewhere:
        clients = tmp_path / "clients.json"
        clients.write_text(
            json.dumps(
                {
                    "clients": [
                        {
                            "iss": "https://listed.example.org/",
                            "jwks": {"keys": [public_jwk(listed_key, "k1")]},
                            "fhirServers": [mine.url],
                        },
                        {"iss": "https://any.example.org/", "jwks": {"keys": [public_jwk(other_key, "k2")]}},
                    ]
                }
            )
        )
        args = (
            "--clients",
            str(clients),
            "--public-url",
            "http://127.0.0.1",
            "--allow-http-fhir",
            "--now",
            NOW,
        )
        with running_service(tmp_path, *args) as svc:
            aud = f"http://127.0.0.1/cds-services/{PATIENT_VIEW}"

            def as_client(key: Any, kid: str, iss: str, server: str) -> requests.Response:
                jwt_ = token(key, "ES384", kid, claims(iss=iss, aud=aud))
                body = with_server(request("patient-view", "v01"), server)
                return call(svc, PATIENT_VIEW, body, headers={"Authorization": f"Bearer {jwt_}"})

            assert as_client(listed_key, "k1", "https://listed.example.org/", mine.url).status_code == 200
            refused = as_client(listed_key, "k1", "https://listed.example.org/", elsewhere.url)
            assert refused.status_code == 412
            assert "is not among this client's fhirServers" in refused.json()["issue"][0]["diagnostics"]
            assert elsewhere.accepted == 0
            assert as_client(other_key, "k2", "https://any.example.org/", elsewhere.url).status_code == 200
            assert elsewhere.accepted >= 1


# ------------------------------------------------------------------ item 9: bounded record


def test_the_bytes_read_across_pages_are_bounded(tmp_path: Path) -> None:
    def page(hit: Any, server: RawServer) -> dict[str, Any]:  # 30 kB pages, forever linked
        return searchset(
            [], next_url=f"{server.url}/fhir/Observation?page={len(server.hits) + 1}", pad=30_000
        )

    args = ("--allow-unauthenticated", "--allow-http-fhir", "--now", NOW, "--fhir-max-bytes", "65536")
    with running_service(tmp_path, *args) as svc, RawServer(answer_json(page)) as ehr:
        body = with_server(
            request("patient-view", "v01", paged_prefetch(f"{ehr.url}/fhir/Observation?page=1")), ehr.url
        )
        answer = call(svc, PATIENT_VIEW, body)
        assert answer.status_code == 412
        assert (
            "larger than this service reads for one call (65536 bytes"
            in answer.json()["issue"][0]["diagnostics"]
        )
        assert len(ehr.hits) == 3  # 30 kB + 30 kB fit, the third page does not
        with RawServer(endless) as flood:
            answer = call(svc, PATIENT_VIEW, with_server(request("patient-view", "v01"), flood.url))
            assert answer.status_code == 412 and "larger than" in answer.text
            assert flood.wait(lambda s: s.open == 0, timeout=MARGIN_S)  # it stopped reading and hung up


# ------------------------------------------------------------------ item 5: a pool of its own


def test_slow_fhir_servers_do_not_starve_other_clients_authentication(tmp_path: Path) -> None:
    """Forty calls stuck on a dripping fhirServer; another client's signed call is still served."""
    slow_key, other_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    clients = tmp_path / "clients.json"
    clients.write_text(
        json.dumps(
            {
                "clients": [
                    {"iss": "https://slow.example.org/", "jwks": {"keys": [public_jwk(slow_key, "s")]}},
                    {"iss": "https://other.example.org/", "jwks": {"keys": [public_jwk(other_key, "o")]}},
                ]
            }
        )
    )
    budget = 10.0
    args = ("--clients", str(clients), "--public-url", "http://127.0.0.1", "--allow-http-fhir", "--now", NOW)
    aud = f"http://127.0.0.1/cds-services/{PATIENT_VIEW}"
    with (
        running_service(tmp_path, *args, "--fhir-timeout", str(budget)) as svc,
        RawServer(drip(0.5)) as slow,
        ThreadPoolExecutor(40) as pool,
    ):

        def stuck() -> int:
            jwt_ = token(slow_key, "ES384", "s", claims(iss="https://slow.example.org/", aud=aud))
            body = with_server(request("patient-view", "v01"), slow.url)
            headers = {"Authorization": f"Bearer {jwt_}"}
            return call(svc, PATIENT_VIEW, body, headers=headers, timeout=budget + 30).status_code

        started = time.monotonic()
        calls = [pool.submit(stuck) for _ in range(40)]
        assert slow.wait(lambda s: s.open >= 16, timeout=30)  # the fetch threads are all busy
        jwt_ = token(other_key, "ES384", "o", claims(iss="https://other.example.org/", aud=aud))
        served = call(
            svc,
            PATIENT_VIEW,
            vignette_request("V01-ces-positive"),
            headers={"Authorization": f"Bearer {jwt_}"},
            timeout=budget,
        )
        assert served.status_code == 200 and len(served.json()["cards"]) == 1
        assert slow.open > 0  # served while the slow calls were still being dripped at
        assert [c.result() for c in calls] == [412] * 40
        assert time.monotonic() - started < budget + 1 + MARGIN_S
