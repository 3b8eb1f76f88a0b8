"""A CDS call decodes its body once and crosses to an engine process once (issue 13 item 6).

The real application in uvicorn on 127.0.0.1 with one real engine process, over real HTTP. In
this (the HTTP) process ``orjson.loads`` and ``EnginePool.run`` are counted; the engine
process writes the digest of every JSON text it decodes to a file (``onepath_helpers``). With
the prefetch complete, and with it incomplete (the rest read from a loopback FHIR server):
the body is decoded once in all, and the engine reached once. On b855ee8 the incomplete call
decoded the body three times (engine, HTTP process, engine again) and crossed twice.

What crosses is compact: the record as one JSON text, no pickled tree of dicts (fc3da1c pickled
the decoded resources: ~2.5 ms more CPU per call in the HTTP process). Its nesting limit is
orjson's, the same on every Python: one level more is refused with 422 before an engine is
taken (fc3da1c: pickle's limit, which depends on the Python, answered 200 there).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import pickletools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from redflags.service import app as service_app
from redflags.service import engine_host
from redflags.service.cds.answer import JSON_DEPTH, RESOURCE_DEPTH
from redflags.service.settings import ServiceSettings
from redflags.workers.pool import EnginePool

from . import onepath_helpers
from .cds_helpers import PATIENT_VIEW, VIGNETTES, prefetch_for, request, resources_of, searchset
from .fetch_servers import RawServer, answer_json
from .service_harness import serving_app

NOW = "2025-03-10T12:00:00Z"
BOUND_S = 60


@contextlib.contextmanager
def _fhir_server() -> Iterator[str]:
    """A loopback FHIR server: every search answers an empty searchset."""
    with RawServer(answer_json(searchset([]))) as server:
        yield f"{server.url}/fhir"


@contextlib.contextmanager
def _service(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    settings = ServiceSettings(
        allow_unauthenticated=True,
        allow_http_fhir=True,
        now=NOW,
        feedback_db=str(tmp / "feedback.sqlite"),
        engine_processes=1,
    )

    #: ``engine_host.engine_pool`` whose engine processes write down their decodes
    counting_pool = functools.partial(engine_host.engine_pool, start=onepath_helpers.counting_start)

    monkeypatch.setattr(service_app, "engine_pool", counting_pool)
    app = service_app.create_app(settings)
    with serving_app(app, BOUND_S) as url:
        yield url


Measure = Callable[[bytes], tuple[int, int]]


@pytest.fixture
def crossed() -> list[tuple[object, ...]]:
    """The arguments of every crossing to an engine process (filled by ``counted``)."""
    return []


@pytest.fixture
def counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crossed: list[tuple[object, ...]]
) -> Iterator[tuple[str, Measure]]:
    """The service URL and ``measure(body)``: (decodes of that body in both processes, crossings)."""
    engine_log = tmp_path / "engine-decodes.txt"
    engine_log.touch()
    monkeypatch.setenv(onepath_helpers.DECODES_ENV, str(engine_log))
    here: list[str] = []
    crossings: list[str] = []
    loads, run = orjson.loads, EnginePool.run

    def counted_loads(data: Any) -> Any:
        here.append(onepath_helpers.digest(data))
        return loads(data)

    async def counted_run(self: EnginePool, fn: Callable[..., Any], *args: object) -> Any:
        crossings.append(getattr(fn, "__name__", "?"))
        crossed.append(args)
        return await run(self, fn, *args)

    monkeypatch.setattr(orjson, "loads", counted_loads)
    monkeypatch.setattr(EnginePool, "run", counted_run)

    with _service(tmp_path, monkeypatch) as url:

        def measure(body: bytes) -> tuple[int, int]:
            here.clear()
            crossings.clear()
            engine_log.write_text("")
            answer = requests.post(
                f"{url}/cds-services/{PATIENT_VIEW}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=BOUND_S,
            )
            assert answer.status_code == 200, answer.text
            assert [c["summary"] for c in answer.json()["cards"]], "the vignette raises its alert"
            key = onepath_helpers.digest(body)
            there = engine_log.read_text().split()
            return here.count(key) + there.count(key), len(crossings)

        yield url, measure


def _body(complete: bool, fhir_server: str | None = None) -> bytes:
    resources = resources_of(VIGNETTES / "V01-ces-positive.json")
    (patient,) = [r for r in resources if r["resourceType"] == "Patient"]
    prefetch = prefetch_for(resources)
    extra: dict[str, Any] = {}
    if not complete:  # the procedures are read from fhirServer (it has none)
        del prefetch["Procedure"]
        extra["fhirServer"] = fhir_server
    return json.dumps(request("patient-view", patient["id"], prefetch, **extra)).encode()


def test_a_call_with_complete_prefetch_decodes_once_and_crosses_once(counted: tuple[str, Measure]) -> None:
    _url, measure = counted
    assert measure(_body(complete=True)) == (1, 1)


def test_a_call_with_incomplete_prefetch_decodes_once_and_crosses_once(counted: tuple[str, Measure]) -> None:
    _url, measure = counted
    with _fhir_server() as ehr:
        assert measure(_body(complete=False, fhir_server=ehr)) == (1, 1)


def test_the_count_sees_decodes_in_the_engine_process(counted: tuple[str, Measure]) -> None:
    """Not vacuous: a decode in the engine process is counted (``$evaluate`` decodes its body there)."""
    url, _measure = counted
    body = (VIGNETTES / "V01-ces-positive.json").read_bytes()
    log_path = Path(os.environ[onepath_helpers.DECODES_ENV])
    log_path.write_text("")
    answer = requests.post(
        f"{url}/fhir/$evaluate", data=body, headers={"Content-Type": "application/fhir+json"}, timeout=BOUND_S
    )
    assert answer.status_code == 200, answer.text
    assert log_path.read_text().split().count(onepath_helpers.digest(body)) == 1


def test_what_crosses_is_the_record_as_one_text_not_a_tree_of_dicts(
    counted: tuple[str, Measure], crossed: list[tuple[object, ...]]
) -> None:
    _url, measure = counted
    assert measure(_body(complete=True)) == (1, 1)
    (args,) = crossed
    opcodes = [op.name for op, _arg, _pos in pickletools.genops(pickle.dumps(args, pickle.HIGHEST_PROTOCOL))]
    assert "BINBYTES" in opcodes or "BINBYTES8" in opcodes, "the record crosses as bytes"
    assert not {"EMPTY_DICT", "DICT"} & set(opcodes), "no resource (a dict) is pickled"


def _nested_body(levels: int) -> bytes:
    """A complete call whose Patient nests ``levels`` deep (itself counted; built as text)."""
    resources = resources_of(VIGNETTES / "V01-ces-positive.json")
    prefetch = prefetch_for(resources)
    wrappers = levels - 2  # under the Patient (level 1) and the innermost object
    deep = '{"extension":' * wrappers + "{}" + "}" * wrappers
    prefetch["Patient"] = {**prefetch["Patient"], "text": "DEEP"}
    call = request("patient-view", prefetch["Patient"]["id"], prefetch)
    body = json.dumps(call).replace('"DEEP"', deep).encode()
    assert _depth(orjson.loads(body)["prefetch"]["Patient"]) == levels
    return body


def _depth(value: Any) -> int:
    """Nesting of a decoded JSON value (a scalar: 0), without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            todo.extend((child, level + 1) for child in children)
    return deepest


def test_a_resource_as_deep_as_the_limit_is_evaluated(counted: tuple[str, Measure]) -> None:
    _url, measure = counted
    assert measure(_nested_body(RESOURCE_DEPTH)) == (1, 1)


def test_a_resource_one_level_deeper_is_refused_before_an_engine_is_taken(
    counted: tuple[str, Measure], crossed: list[tuple[object, ...]]
) -> None:
    url, measure = counted
    answer = requests.post(
        f"{url}/cds-services/{PATIENT_VIEW}",
        data=_nested_body(RESOURCE_DEPTH + 1),
        headers={"Content-Type": "application/json"},
        timeout=BOUND_S,
    )
    assert answer.status_code == 422, answer.text
    (issue,) = answer.json()["issue"]
    assert (issue["code"], issue["diagnostics"]) == (
        "too-costly",
        "the data is nested too deeply to be evaluated",
    )
    assert crossed == []  # refused before an engine was taken
    assert measure(_body(complete=True)) == (1, 1)  # and the next call is served


def test_the_limit_is_orjsons() -> None:
    """``JSON_DEPTH`` is what orjson encodes (an orjson that changes it fails here, not in use)."""
    value: list[Any] = []
    for _ in range(JSON_DEPTH - 1):
        value = [value]
    orjson.dumps(value)
    with pytest.raises(orjson.JSONEncodeError, match=r"(?i)recursion limit"):
        orjson.dumps([value])
