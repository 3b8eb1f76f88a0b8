"""CDS Hooks 2.0 over real HTTP: discovery, calls, prefetch fallback to a real FHIR server, cards.

One service (``redflags serve``, fixed clock at the vignettes' time) and one Medplum FHIR server
are started for the whole module. Every example request of the specification and the reference
implementations (``fixtures/external/cds-hooks/``) is sent and its answer checked.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_adapters.intake import group
from fhir_adapters.output import episode_identifier, flag_for
from fhir_adapters.times import parse_now
from fhir_adapters.validate import validate
from redflags.pipeline import Pipeline
from redflags.service.cds.prefetch import UNAVAILABLE
from rulesets.cauda_equina_syndrome import META as CES
from rulesets.meta import CANONICAL_BASE

from .cds_helpers import (
    CDS,
    ENCOUNTER_START,
    ORDER_SIGN,
    PATIENT_VIEW,
    SEARCH_KEYS,
    TOKEN,
    VIGNETTES,
    assert_no_empty,
    call,
    check_response,
    prefetch_for,
    request,
    resources_of,
    searchset,
    vignette_request,
)
from .conftest import FIXTURES
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401  (module fixture)
from .service_harness import Service, running_service

NOW = "2025-03-10T12:00:00Z"


def _json(name: str) -> Any:
    return json.loads((CDS / name).read_text())


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("cds")
    args = ("--allow-unauthenticated", "--allow-http-fhir", "--now", NOW, "--fhir-timeout", "2")
    with running_service(tmp, *args) as svc:
        yield svc


# --- discovery ---------------------------------------------------------------------------------


def test_discovery_lists_sorted_services_with_prefetch_for_what_the_rules_read(service: Service) -> None:
    first = requests.get(f"{service.url}/cds-services", timeout=10)
    second = requests.get(f"{service.url}/cds-services", timeout=10)
    assert first.status_code == 200 and first.content == second.content  # deterministic
    services = first.json()["services"]
    assert [s["id"] for s in services] == [ENCOUNTER_START, ORDER_SIGN, PATIENT_VIEW]
    assert {s["id"]: s["hook"] for s in services} == {
        PATIENT_VIEW: "patient-view",
        ENCOUNTER_START: "encounter-start",
        ORDER_SIGN: "order-sign",
    }
    spec_fields = {key for s in _json("discovery-response.spec-2.0.1.json")["services"] for key in s}
    for entry in services:
        assert_no_empty(entry)
        assert set(entry) <= spec_fields and {"hook", "title", "description", "id", "prefetch"} <= set(entry)
        assert entry["prefetch"] == {
            "Condition": "Condition?patient={{context.patientId}}",
            "Encounter": "Encounter?patient={{context.patientId}}&_sort=-date&_count=100",
            "MedicationRequest": "MedicationRequest?patient={{context.patientId}}"
            "&_include=MedicationRequest:medication",
            "MedicationStatement": "MedicationStatement?patient={{context.patientId}}"
            "&_include=MedicationStatement:medication",
            "Observation": "Observation?patient={{context.patientId}}",
            "Patient": "Patient/{{context.patientId}}",
            "Procedure": "Procedure?patient={{context.patientId}}",
        }
        assert list(entry["prefetch"]) == sorted(entry["prefetch"])


# --- the specification's and reference implementations' example requests ---------------------


def test_spec_patient_view_request_without_our_prefetch_answers_412_at_once(service: Service) -> None:
    """Its fhirServer is a remote plain-http host: refused before any connection is tried.

    The refusal names the scheme (not a timeout or a connection error): no traffic left the machine.
    """
    body = _json("patient-view-request.spec-2.0.1.json")
    answer = call(service, PATIENT_VIEW, body)
    assert answer.status_code == 412
    message = answer.json()["issue"][0]["diagnostics"]
    assert "plain http: refused" in message and "Observation" in message
    assert body["fhirAuthorization"]["access_token"] not in service.log()


def test_spec_patient_view_request_with_prefetch_answers_cards(service: Service) -> None:
    body = _json("patient-view-request.spec-2.0.1.json")
    body["prefetch"]["Patient"] = body["prefetch"]["patientToGreet"]
    body["prefetch"].update({key: searchset([]) for key in SEARCH_KEYS[:3]})
    body["prefetch"].update({key: None for key in SEARCH_KEYS[3:]})  # null: the client has no data
    answer = call(service, PATIENT_VIEW, body)
    assert check_response(answer) == _json("card-response-empty.spec-2.0.1.json")
    assert answer.content == b'{"cards":[]}'


def test_spec_request_with_extension_lacks_patient_id_and_is_refused(service: Service) -> None:
    answer = call(service, PATIENT_VIEW, _json("request-with-extension.spec-2.0.1.json"))
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["diagnostics"] == "context.patientId is required for hook patient-view"


def test_spec_prefetch_data_keys_of_other_templates_are_ignored(service: Service) -> None:
    """The spec's prefetch data answers the spec's templates, not ours: ours are still missing."""
    body = _json("patient-view-request.spec-2.0.1.json")
    body["prefetch"] = _json("prefetch-data.spec-2.0.1.json")["prefetch"]  # "user": "123" too
    answer = call(service, PATIENT_VIEW, body)
    assert answer.status_code == 412
    assert "prefetch lacks Condition, Encounter, MedicationRequest" in answer.text
    # Its Patient (no id, snipped) under our key is the context patient: the key says so.
    body["prefetch"] = {"Patient": body["prefetch"]["patient"], **{k: None for k in SEARCH_KEYS}}
    assert check_response(call(service, PATIENT_VIEW, body)) == {"cards": []}


def test_ahrq_patient_view_request_with_full_prefetch_answers_without_fetching(service: Service) -> None:
    body = _json("patient-view-request-with-prefetch.ahrq-cql-services.json")
    assert check_response(call(service, PATIENT_VIEW, body)) == {"cards": []}
    line = [json.loads(x) for x in service.log().splitlines() if '"cds_call"' in x][-1]
    assert (
        line["fetched"] == [] and line["fhir_requests"] == 0 and line["resources"] == 6
    )  # Patient, 4 Observations, a Condition


def _hook_examples() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for path in sorted(CDS.glob("hook-context-examples.*.json")):
        hook = path.name.split(".")[1]
        for example in json.loads(path.read_text())["examples"]:
            cases.append((hook, example["label"], example["body"]["context"]))
    return cases


@pytest.mark.parametrize(("hook", "label", "context"), _hook_examples(), ids=lambda v: str(v)[:20])
def test_every_hook_context_example(service: Service, hook: str, label: str, context: dict[str, Any]) -> None:
    """Served hooks answer cards; the others are not ours (400 naming the mismatch)."""
    patient = {"resourceType": "Patient", "id": context["patientId"], "gender": "female"}
    body = {
        "hook": hook,
        "hookInstance": str(uuid.uuid4()),
        "context": context,
        "prefetch": {"Patient": patient, **{key: searchset([]) for key in SEARCH_KEYS}},
    }
    served = {"patient-view": PATIENT_VIEW, "encounter-start": ENCOUNTER_START, "order-sign": ORDER_SIGN}
    if hook in served:
        assert check_response(call(service, served[hook], body)) == {"cards": []}
    else:
        answer = call(service, PATIENT_VIEW, body)
        assert answer.status_code == 400
        assert answer.json()["issue"][0]["diagnostics"] == (
            f"hook '{hook}' does not match this service (it serves 'patient-view')"
        )


# --- cards ---------------------------------------------------------------------------------------


def _expected(name: str) -> list[tuple[str, str]]:
    expected = json.loads((VIGNETTES / f"{name}.expected.json").read_text())
    assert expected["now"] == NOW
    (alerts,) = expected["patients"].values()
    return [(a["rule"], a["severity"]) for a in alerts]


VIGNETTE_NAMES = sorted(p.stem for p in VIGNETTES.glob("*.json") if not p.name.endswith(".expected.json"))


@pytest.mark.parametrize("name", VIGNETTE_NAMES)
def test_every_vignette_over_cds_hooks_gives_its_expected_cards(
    service: Service, pipeline: Pipeline, name: str
) -> None:
    indicator = {"critical": "critical", "urgent": "warning", "routine": "info"}
    body = check_response(call(service, PATIENT_VIEW, vignette_request(name)))
    got = [(card["source"]["label"], card["indicator"]) for card in body["cards"]]
    metas = pipeline.engine.metas
    assert got == [(metas[rule].source_label, indicator[sev]) for rule, sev in _expected(name)]
    for card in body["cards"]:
        assert len(card["summary"]) < 140


def test_positive_patient_gets_one_critical_card_with_flag_and_careplan(
    service: Service, pipeline: Pipeline
) -> None:
    body = vignette_request("V01-ces-positive")
    cards = check_response(call(service, PATIENT_VIEW, body))["cards"]
    assert len(cards) == 1
    (card,) = cards
    assert card["indicator"] == "critical"
    assert card["summary"] == f"Cauda equina syndrome, tier A: {CES.tier('A').label}"
    assert card["source"] == {"label": CES.source_label, "url": CES.source_url}
    assert str(uuid.UUID(card["uuid"])) == card["uuid"]
    assert card["selectionBehavior"] == "at-most-one"
    reasons = card["overrideReasons"]
    assert len(reasons) == 4 and {r["system"] for r in reasons} == {
        f"{CANONICAL_BASE}/CodeSystem/override-reason"
    }
    assert all(r["display"] for r in reasons)
    detail = card["detail"]
    # references in code spans: never a link
    assert "- Post-void residual volume 350 mL on 2025-03-10 10:30 (`Observation/v01-pvr`)" in detail
    assert "- Back pain since 2025-03-05 (`Condition/v01-low-back-pain`)" in detail
    assert detail.startswith("**Tier A (critical)**")

    (suggestion,) = card["suggestions"]
    assert suggestion["isRecommended"] is True and suggestion["label"]
    flag_action, careplan_action = suggestion["actions"]
    assert [flag_action["type"], careplan_action["type"]] == ["create", "create"]
    flag, careplan = flag_action["resource"], careplan_action["resource"]
    validate(flag)
    validate(careplan)
    assert flag["resourceType"] == "Flag" and careplan["resourceType"] == "CarePlan"
    assert flag["subject"] == {"reference": "Patient/v01"} == careplan["subject"]
    assert careplan["supportingInfo"][0] == {"reference": f"Flag/{flag['id']}"}
    assert {"reference": "Observation/v01-pvr"} in careplan["supportingInfo"]
    assert careplan["status"] == "draft" and careplan["intent"] == "proposal"
    # the Flag is the replay's, but authored by the engine Device named by identifier, and its
    # identifier scoped by the caller's tenant (``default|``: no fhirServer), as the ledger's
    assert flag["author"]["identifier"] == {"system": f"{CANONICAL_BASE}/device", "value": "redflags-engine"}
    same = {k: v for k, v in flag.items() if k not in ("id", "author")}
    replay_flag = _replay_flag(body, pipeline, scope="default|")
    assert same == {k: v for k, v in replay_flag.items() if k != "author"}

    # the same call again (a retry of this hookInstance) gives the same card ids
    again = check_response(call(service, PATIENT_VIEW, body))["cards"][0]
    assert (again["uuid"], again["suggestions"][0]["uuid"]) == (card["uuid"], suggestion["uuid"])
    other = check_response(call(service, PATIENT_VIEW, {**body, "hookInstance": str(uuid.uuid4())}))
    assert other["cards"][0]["uuid"] != card["uuid"]


def _replay_flag(body: dict[str, Any], pipeline: Pipeline, scope: str = "") -> dict[str, Any]:
    resources = [(k, v, None) for k, v in [("Patient", body["prefetch"]["Patient"])]]
    for key in SEARCH_KEYS:
        resources += [(key, e["resource"], None) for e in body["prefetch"][key]["entry"]]
    (result,) = pipeline.evaluate(group("test", resources), parse_now(NOW))
    (alert,) = result.alerts
    return flag_for(alert, pipeline.engine.metas[alert.rule], episode=episode_identifier(alert, scope))


def test_negative_patient_gets_exactly_no_cards(service: Service) -> None:
    answer = call(service, PATIENT_VIEW, vignette_request("V02-ces-near-miss-unilateral-sciatica"))
    assert answer.status_code == 200 and answer.content == b'{"cards":[]}'


def test_encounter_start_gives_the_same_cards(service: Service) -> None:
    cards = check_response(
        call(service, ENCOUNTER_START, vignette_request("V03-gbs-positive", "encounter-start"))
    )
    assert [(c["indicator"], c["summary"].split(",")[0]) for c in cards["cards"]] == [
        ("critical", "Guillain-Barré syndrome")
    ]


def test_only_the_context_patient_is_evaluated(service: Service) -> None:
    """Another patient's resources slipped into a searchset never make a card."""
    body = vignette_request("V02-ces-near-miss-unilateral-sciatica")
    intruder = resources_of(VIGNETTES / "V01-ces-positive.json")
    body["prefetch"]["Observation"]["entry"] += [
        {"resource": r} for r in intruder if r["resourceType"] == "Observation"
    ]
    body["prefetch"]["Condition"]["entry"] += [
        {"resource": r} for r in intruder if r["resourceType"] == "Condition"
    ]
    assert check_response(call(service, PATIENT_VIEW, body)) == {"cards": []}


def test_order_sign_counts_the_draft_orders_as_signed(service: Service) -> None:
    """An MG patient's aminoglycoside order being signed shows on the card as a possible trigger."""
    resources = resources_of(FIXTURES / "myasthenic_crisis_risk" / "tierB-exacerbation-dx-with-triggers.json")
    (gentamicin,) = [r for r in resources if r.get("id") == "mg-b-exac-gentamicin"]
    record = [r for r in resources if r is not gentamicin]
    draft = {k: v for k, v in gentamicin.items() if k != "authoredOn"} | {"status": "draft"}
    body = request("order-sign", "mg-b-exac", prefetch_for(record))
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": draft}],
    }
    signed = check_response(call(service, ORDER_SIGN, body))["cards"]
    viewed = check_response(
        call(service, PATIENT_VIEW, request("patient-view", "mg-b-exac", prefetch_for(record)))
    )
    assert [c["indicator"] for c in signed] == ["warning"] == [c["indicator"] for c in viewed["cards"]]
    trigger = "new drug that can worsen myasthenia gravis: Aminoglycoside antibiotic on 2025-03-10"
    assert trigger in signed[0]["detail"]
    assert "new drug" not in viewed["cards"][0]["detail"]


def test_system_actions_carry_the_flag_when_asked(tmp_path: Path) -> None:
    args = ("--allow-unauthenticated", "--now", NOW, "--system-actions")
    with running_service(tmp_path, *args) as svc:
        body = check_response(call(svc, PATIENT_VIEW, vignette_request("V01-ces-positive")))
        empty = call(svc, PATIENT_VIEW, vignette_request("V02-ces-near-miss-unilateral-sciatica"))
    (action,) = body["systemActions"]
    assert action["type"] == "create" and action["resource"]["resourceType"] == "Flag"
    (card,) = body["cards"]
    (only,) = card["suggestions"][0]["actions"]  # the Flag is not created twice
    careplan = only["resource"]
    assert careplan["resourceType"] == "CarePlan"
    assert careplan["supportingInfo"][0]["identifier"] == action["resource"]["identifier"][0]
    validate(careplan)
    assert empty.content == b'{"cards":[]}'


# --- prefetch fallback against a real FHIR server (Medplum) ---------------------------------


@pytest.fixture(scope="module")
def loaded(fhir_server: FhirServer) -> FhirServer:  # noqa: F811
    """V01 (positive), V02 (negative), and V07 behind 45 unrelated Observations (three pages)."""
    for name in ("V01-ces-positive", "V02-ces-near-miss-unilateral-sciatica"):
        fhir_server.load(json.loads((VIGNETTES / f"{name}.json").read_text()))
    v07 = resources_of(VIGNETTES / "V07-cord-compression-positive.json")
    fhir_server.load(next(r for r in v07 if r["resourceType"] == "Patient"))
    for i in range(45):
        fhir_server.put(
            f"Observation/v07-filler-{i}",
            {
                "resourceType": "Observation",
                "id": f"v07-filler-{i}",
                "status": "final",
                "code": {
                    "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
                },
                "subject": {"reference": "Patient/v07"},
                "effectiveDateTime": "2025-03-09T08:00:00Z",
                "valueQuantity": {
                    "value": 80,
                    "unit": "/min",
                    "system": "http://unitsofmeasure.org",
                    "code": "/min",
                },
            },
        )
    fhir_server.load(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in v07]}
    )
    return fhir_server


def _with_server(body: dict[str, Any], server: str) -> dict[str, Any]:
    return {**body, "fhirServer": server, "fhirAuthorization": TOKEN}


def test_fallback_reads_everything_from_the_fhir_server(service: Service, loaded: FhirServer) -> None:
    body = _with_server(request("patient-view", "v01"), loaded.url)
    cards = check_response(call(service, PATIENT_VIEW, body))["cards"]
    assert [(c["indicator"], c["source"]["label"]) for c in cards] == [("critical", CES.source_label)]
    line = [json.loads(x) for x in service.log().splitlines() if '"cds_call"' in x][-1]
    assert line["fetched"] == [
        "Condition",
        "Encounter",
        "MedicationRequest",
        "MedicationStatement",
        "Observation",
        "Patient",
        "Procedure",
    ]
    assert line["resources"] == 9  # Patient, a Condition, its Encounter, 5 Observations, a MedicationRequest
    negative = _with_server(request("patient-view", "v02"), loaded.url)
    assert check_response(call(service, PATIENT_VIEW, negative)) == {"cards": []}
    assert TOKEN["access_token"] not in service.log()


def test_fallback_fills_only_what_prefetch_lacks(service: Service, loaded: FhirServer) -> None:
    prefetch = prefetch_for(resources_of(VIGNETTES / "V01-ces-positive.json"))
    del prefetch["Observation"]  # absent: fetched
    prefetch["Condition"] = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}],
    }
    body = _with_server(request("patient-view", "v01", prefetch), loaded.url)
    assert len(check_response(call(service, PATIENT_VIEW, body))["cards"]) == 1
    line = [json.loads(x) for x in service.log().splitlines() if '"cds_call"' in x][-1]
    assert line["fetched"] == ["Condition", "Observation"] and line["fhir_requests"] == 2


def test_fallback_follows_next_links_of_a_paged_search(service: Service, loaded: FhirServer) -> None:
    """V07's red-flag Observations lie on the third page (after 45 others, 20 per page)."""
    assert len(loaded.search("Observation?patient=v07")) == 45 + 2
    body = _with_server(request("patient-view", "v07"), loaded.url)
    cards = check_response(call(service, PATIENT_VIEW, body))["cards"]
    assert [c["indicator"] for c in cards] == ["critical"]
    line = [json.loads(x) for x in service.log().splitlines() if '"cds_call"' in x][-1]
    assert line["fhir_requests"] == 7 + 2  # seven templates, two more Observation pages


def test_prefetched_first_page_is_completed_from_the_server(service: Service, loaded: FhirServer) -> None:
    first = loaded.get("Observation?patient=v07&_count=20").json()
    assert any(link["relation"] == "next" for link in first["link"])
    prefetch = {"Observation": first, "Patient": loaded.get("Patient/v07").json()}
    prefetch.update(
        {
            key: loaded.get(f"{key}?patient=v07&_count=100").json()
            for key in (*SEARCH_KEYS, "Encounter")
            if key != "Observation"
        }
    )
    body = _with_server(request("patient-view", "v07", prefetch), loaded.url)
    assert [c["indicator"] for c in check_response(call(service, PATIENT_VIEW, body))["cards"]] == [
        "critical"
    ]
    line = [json.loads(x) for x in service.log().splitlines() if '"cds_call"' in x][-1]
    assert line["fetched"] == [] and line["fhir_requests"] == 2
    # without a fhirServer the later pages cannot be had
    assert call(service, PATIENT_VIEW, request("patient-view", "v07", prefetch)).status_code == 412


# --- unreachable or untrusted data -----------------------------------------------------------


class _Stub(http.server.ThreadingHTTPServer):
    """A loopback HTTP server answering with ``respond(handler)``; records what it was asked."""

    daemon_threads = True

    def __init__(self, respond: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        self.hits: list[tuple[str, str | None]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.hits.append((self.path, self.headers.get("Authorization")))
                respond(self)

            def log_message(self, *_args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def __enter__(self) -> _Stub:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.shutdown()
        self.server_close()


def _send(handler: http.server.BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/fhir+json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def unavailable(service: Service, answer: requests.Response, reason: str) -> None:
    """The generic 412 (no oracle for the caller); the reason is in the service's log only."""
    assert answer.status_code == 412 and answer.json()["issue"][0]["diagnostics"] == UNAVAILABLE
    line = [json.loads(x) for x in service.log().splitlines() if '"cds_prefetch_unavailable"' in x][-1]
    assert reason in line["reason"]


def test_next_link_to_another_host_is_not_followed(service: Service) -> None:
    """The token would go to whoever the link names: refuse (412) and send nothing there."""

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        _send(handler, 200, searchset([]))

    with _Stub(respond) as other, _Stub(respond) as ehr:
        prefetch = prefetch_for(resources_of(VIGNETTES / "V01-ces-positive.json"))
        prefetch["Observation"]["link"] = [
            {"relation": "next", "url": f"http://localhost:{other.port}/fhir/Observation?page=2"}
        ]
        body = _with_server(request("patient-view", "v01", prefetch), f"http://127.0.0.1:{ehr.port}/fhir")
        answer = call(service, PATIENT_VIEW, body)
        unavailable(service, answer, "next link leads outside the FHIR server")
        assert other.hits == [] and ehr.hits == []
        # the same page linked on the FHIR server itself is followed, with the bearer token
        prefetch["Observation"]["link"][0]["url"] = f"http://127.0.0.1:{ehr.port}/fhir/Observation?page=2"
        assert len(check_response(call(service, PATIENT_VIEW, body))["cards"]) == 1
        assert ehr.hits == [("/fhir/Observation?page=2", f"Bearer {TOKEN['access_token']}")]
    assert TOKEN["access_token"] not in service.log()


def test_server_errors_and_refusals_answer_412(service: Service) -> None:
    with _Stub(lambda h: _send(h, 500, {"resourceType": "OperationOutcome"})) as broken:
        body = _with_server(request("patient-view", "v01"), f"http://127.0.0.1:{broken.port}")
        answer = call(service, PATIENT_VIEW, body)
    unavailable(service, answer, "answered HTTP 500")
    with _Stub(lambda h: _send(h, 401, {"resourceType": "OperationOutcome"})) as refusing:
        answer = call(
            service,
            PATIENT_VIEW,
            _with_server(request("patient-view", "v01"), f"http://127.0.0.1:{refusing.port}"),
        )
    unavailable(service, answer, "answered HTTP 401")


def test_unreachable_or_silent_fhir_server_answers_412_without_hanging(service: Service) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connection refused
        answer = call(
            service, PATIENT_VIEW, _with_server(request("patient-view", "v01"), f"http://127.0.0.1:{port}")
        )
    unavailable(service, answer, "cannot be reached")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never answers
        answer = call(  # the client's own 30 s timeout would raise if the service hung
            service,
            PATIENT_VIEW,
            _with_server(request("patient-view", "v01"), f"http://127.0.0.1:{silent.getsockname()[1]}"),
        )
        silent.settimeout(5)
        silent.accept()[0].close()  # the service did connect, then gave up on the --fhir-timeout
    unavailable(service, answer, "did not answer in time")


def test_missing_data_without_fhir_server_answers_412(service: Service) -> None:
    answer = call(service, PATIENT_VIEW, request("patient-view", "v01"))
    assert answer.status_code == 412
    assert answer.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "incomplete",
                "diagnostics": "prefetch lacks Condition, MedicationRequest, MedicationStatement, "
                "Observation, Patient, Procedure and the request gives no fhirServer to read them from",
            }
        ],
    }


def test_remote_plain_http_is_refused_even_with_allow_http_fhir(service: Service) -> None:
    body = _with_server(request("patient-view", "v01"), "http://fhir.example.org/r4")
    answer = call(service, PATIENT_VIEW, body)
    assert answer.status_code == 412 and "plain http: refused" in answer.text


def test_loopback_plain_http_is_refused_without_allow_http_fhir(tmp_path: Path, loaded: FhirServer) -> None:
    with running_service(tmp_path, "--allow-unauthenticated", "--now", NOW) as svc:
        answer = call(svc, PATIENT_VIEW, _with_server(request("patient-view", "v01"), loaded.url))
    assert answer.status_code == 412 and "plain http: refused" in answer.text


# --- malformed requests ------------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    return request("patient-view", "v01", {key: None for key in ("Patient", *SEARCH_KEYS)})


def _without(key: str) -> dict[str, Any]:
    body = _valid()
    del body[key]
    return body


def _context(**changes: Any) -> dict[str, Any]:
    body = _valid()
    body["context"] = {k: v for k, v in {**body["context"], **changes}.items() if v is not None}
    return body


MALFORMED: list[tuple[str, Any, str]] = [
    ("not json", b"{hook", "invalid JSON: "),
    ("empty body", b"", "empty request body"),
    ("array", [], "the request body must be a JSON object"),
    ("no hook", _without("hook"), "hook is required"),
    ("other hook", {**_valid(), "hook": "order-select"}, "hook 'order-select' does not match this service"),
    ("no hookInstance", _without("hookInstance"), "hookInstance is required"),
    ("hookInstance not uuid", {**_valid(), "hookInstance": "1234"}, "hookInstance must be a UUID"),
    ("no context", _without("context"), "context is required (an object)"),
    ("context not object", {**_valid(), "context": "v01"}, "context is required (an object)"),
    ("no patientId", _context(patientId=None), "context.patientId is required for hook patient-view"),
    ("patientId not id", _context(patientId="../Patient/x"), "context.patientId is not a FHIR id"),
    ("patientId number", _context(patientId=12), "context.patientId must be a string"),
    ("no userId", _context(userId=None), "context.userId is required for hook patient-view"),
    ("userId not reference", _context(userId="me"), "context.userId must be a reference"),
    (
        "fhirServer not url",
        {**_valid(), "fhirServer": "ehr.example.org"},
        "fhirServer must be an absolute http(s) URL",
    ),
    (
        "fhirServer query",
        {**_valid(), "fhirServer": "https://e.org/fhir?x=1"},
        "fhirServer must be a FHIR base URL",
    ),
    (
        "auth without server",
        {**_valid(), "fhirAuthorization": TOKEN},
        "fhirServer is required when fhirAuthorization",
    ),
    (
        "auth without token",
        {**_valid(), "fhirServer": "https://e.org", "fhirAuthorization": {**TOKEN, "access_token": ""}},
        "fhirAuthorization.access_token is required",
    ),
    (
        "auth not bearer",
        {**_valid(), "fhirServer": "https://e.org", "fhirAuthorization": {**TOKEN, "token_type": "MAC"}},
        "fhirAuthorization.token_type must be 'Bearer'",
    ),
    ("prefetch not object", {**_valid(), "prefetch": []}, "prefetch must be an object"),
    (
        "prefetch value string",
        {**_valid(), "prefetch": {"Patient": "123"}},
        "prefetch.Patient must be a FHIR resource",
    ),
    (
        "prefetch other patient",
        {**_valid(), "prefetch": {"Patient": {"resourceType": "Patient", "id": "v02"}}},
        "prefetch.Patient is Patient/v02, not the one in context",
    ),
    (
        "prefetch wrong type",
        {**_valid(), "prefetch": {"Patient": {"resourceType": "Practitioner", "id": "v01"}}},
        "prefetch.Patient must be a Patient",
    ),
    (
        "bundle entry not array",
        {**_valid(), "prefetch": {"Observation": {"resourceType": "Bundle", "entry": {}}}},
        "prefetch.Observation.entry must be an array",
    ),
    ("extension not object", {**_valid(), "extension": "x"}, "extension must be an object"),
]


@pytest.mark.parametrize(("kind", "body", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests_get_400_with_a_clear_message(
    service: Service, kind: str, body: Any, message: str
) -> None:
    answer = call(service, PATIENT_VIEW, body)
    assert answer.status_code == 400, answer.text
    issue = answer.json()["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == "invalid"
    assert issue["diagnostics"].startswith(message), issue["diagnostics"]


def test_encounter_start_requires_encounter_id(service: Service) -> None:
    body = request("encounter-start", "v01", {key: None for key in ("Patient", *SEARCH_KEYS)})
    del body["context"]["encounterId"]
    answer = call(service, ENCOUNTER_START, body)
    assert answer.status_code == 400
    assert (
        answer.json()["issue"][0]["diagnostics"] == "context.encounterId is required for hook encounter-start"
    )


def test_order_sign_requires_draft_orders_bundle(service: Service) -> None:
    body = request("order-sign", "v01", {key: None for key in ("Patient", *SEARCH_KEYS)})
    assert "context.draftOrders is required" in call(service, ORDER_SIGN, body).text
    body["context"]["draftOrders"] = {"resourceType": "MedicationRequest"}
    assert "context.draftOrders must be a FHIR Bundle" in call(service, ORDER_SIGN, body).text


def test_wrong_content_type_and_oversized_body(service: Service) -> None:
    answer = call(service, PATIENT_VIEW, json.dumps(_valid()), headers={"Content-Type": "text/plain"})
    assert answer.status_code == 415 and answer.json()["issue"][0]["code"] == "not-supported"
    big = b'{"hook": "patient-view", "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    answer = call(service, PATIENT_VIEW, big)
    assert answer.status_code == 413 and "larger than the limit" in answer.text


def test_unknown_service_is_404(service: Service) -> None:
    answer = call(service, "no-such-service", _valid())
    assert answer.status_code == 404
    assert answer.json()["issue"][0] == {
        "severity": "error",
        "code": "not-found",
        "diagnostics": "no CDS service 'no-such-service': GET /cds-services lists them",
    }


def test_no_patient_id_or_token_in_the_logs(service: Service) -> None:
    """Runs last in this module: everything above has logged by now."""
    log = service.log()
    assert '"cds_call"' in log
    for secret in (TOKEN["access_token"], "v01-pvr", '"v01"', "Patient/v01", "1288992", "mg-b-exac"):
        assert secret not in log, secret
