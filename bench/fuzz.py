"""Property-based fuzzing of everything that reads a caller's bytes (hypothesis, not a hand mutator).

Inputs are the repository's own fixtures, mutated by hypothesis: a value anywhere in a resource
replaced by arbitrary JSON, by the wrong JSON type, a huge or tiny number, a deeply nested
value, unicode, a broken reference or date; an element deleted; the body wrapped as a single
resource, a Parameters or a CDS Hooks request with the record as prefetch; and plain garbage.
They go to ``POST /fhir/$evaluate``, the three CDS services and their feedback endpoint.

Properties (every input): no 5xx; every rejection a 4xx carrying a FHIR OperationOutcome; the
service still answers. After each batch: ``/healthz`` and a known fixture evaluated correctly
(the same alerts as its ``.expected.json``), its time against the time before any fuzzing, and
the resident memory of the service (HTTP process + engine processes) against the start.

The short run is ``tests/test_fuzz_service.py`` (a real served process, fixed seed); the long
run, on demand, serves ``redflags serve`` on loopback and prints the figures::

    python -m bench.fuzz --inputs 100000            # batches of 2,000, seed 1
    python -m bench.fuzz --inputs 5000 --batch 500 --seed 7

A ``fhirServer`` in a request is always a closed loopback port over plain http (refused before
any I/O): fuzzing never reaches another host.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
NOW_TEXT = "2025-03-10T12:00:00Z"  # the fixtures' evaluation time (fixtures/CONVENTIONS.md)
#: The known call after each batch: a critical cauda equina alert (fixtures/vignettes).
PROBE = FIXTURES / "vignettes" / "V01-ces-positive.json"
SERVICE_IDS = ("redflags-patient-view", "redflags-encounter-start", "redflags-order-sign")
HOOKS = {"redflags-patient-view": "patient-view", "redflags-encounter-start": "encounter-start"}
HOOKS["redflags-order-sign"] = "order-sign"
#: Never a reachable server: plain http is refused (412) before any connection is made.
SAFE_FHIR_SERVER = "http://127.0.0.1:9/fhir"
FHIR_JSON = "application/fhir+json"
MAX_SEED_BYTES = 30_000  # small fixtures: the mutations, not the bulk, are the point


# --- seeds: the fixtures --------------------------------------------------------------------------
@cache
def bundles() -> tuple[dict[str, Any], ...]:
    """Every small fixture Bundle (rules, vignettes, history, multi, R4 examples)."""
    found = []
    for path in sorted(FIXTURES.rglob("*.json")):
        if path.name.endswith(".expected.json") or "cds-hooks" in path.parts:
            continue
        if path.stat().st_size > MAX_SEED_BYTES:
            continue
        doc = orjson.loads(path.read_bytes())
        if isinstance(doc, dict) and isinstance(doc.get("resourceType"), str):
            found.append(doc)
    return tuple(found)


@cache
def feedback_seeds() -> tuple[dict[str, Any], ...]:
    examples = sorted((FIXTURES / "external" / "cds-hooks").glob("feedback*.json"))
    return tuple(orjson.loads(p.read_bytes()) for p in examples)


def _entries(doc: dict[str, Any]) -> list[dict[str, Any]]:
    entries = doc.get("entry") if doc.get("resourceType") == "Bundle" else [{"resource": doc}]
    resources = (e.get("resource") if isinstance(e, dict) else None for e in entries or ())
    return [r for r in resources if isinstance(r, dict)]


def cds_request(doc: dict[str, Any], service_id: str) -> dict[str, Any]:
    """A CDS Hooks request for the first patient of a fixture, its record as prefetch."""
    resources = _entries(doc)
    patient = next((r for r in resources if r.get("resourceType") == "Patient"), {"id": "p1"})
    pid = str(patient.get("id", "p1"))
    prefetch: dict[str, Any] = {}
    for res in resources:
        rtype = res.get("resourceType")
        if rtype == "Patient":
            prefetch.setdefault("Patient", res)
        elif isinstance(rtype, str):
            key = prefetch.setdefault(rtype, {"resourceType": "Bundle", "type": "searchset", "entry": []})
            url = f"https://ehr.example.org/fhir/{rtype}/{res.get('id')}"
            key["entry"].append({"fullUrl": url, "resource": res})
    for key in ("Condition", "Observation", "Procedure", "MedicationRequest", "MedicationStatement"):
        prefetch.setdefault(key, None)  # "no data": the call is answered from the prefetch alone
    context: dict[str, Any] = {"userId": "Practitioner/fuzz", "patientId": pid}
    hook = HOOKS[service_id]
    if hook == "encounter-start":
        context["encounterId"] = "e1"
    if hook == "order-sign":
        orders = [r for r in resources if r.get("resourceType") == "MedicationRequest"][:2]
        context["draftOrders"] = {"resourceType": "Bundle", "entry": [{"resource": o} for o in orders]}
    return {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": context,
        "prefetch": prefetch,
    }


# --- values and mutations -------------------------------------------------------------------------
#: Strings that readers parse: references, ids, dates, codes, URLs (with their favourite mistakes).
TRICKY_STRINGS = (
    "", " ", "Patient/", "Patient/a/b", "Patient/../Patient/x", "urn:uuid:", "Patient/1\n", "p1\n",
    "http://127.0.0.1:9/fhir/Patient/1", "https://evil.example/x", "Patient/" + "a" * 300, "#",
    "2025-03-10", "2025-03-10T12:00:00Z", "2025-03-10T12:00:00", "2025-13-45", "2025-02-30T25:61:61Z",
    "9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59-99:99", "0001-01-01T00:00:00+99:00", "0000-01-01",
    "2025-03-10\n", "2025-03-10T12:00:00Z\n", "\u0662\u0660\u0662\u0665-\u0660\u0663-\u0661\u0660",
    "1e400", "NaN", "-1", "final", "active",
    "entered-in-error", "preliminary", "http://snomed.info/sct", "http://loinc.org", "mmol/L", "mg/dL",
    "\u0000", "\u202e", "\ud7ff", "🦵" * 50, "a" * 10_000, "[x](javascript:alert(1))", "<script>",
)  # fmt: skip
TRICKY_NUMBERS = (0, -1, 1e308, -1e308, 1e-320, 2**63 - 1, -(2**63), 2**64 - 1, 10**30, 0.1, 1e21)
KEYS = (
    "resourceType", "id", "reference", "subject", "patient", "value", "valueQuantity", "valueInteger",
    "valueBoolean", "valueString", "valueCodeableConcept", "valueDateTime", "coding", "system", "code",
    "status", "clinicalStatus", "verificationStatus", "start", "end", "extension", "url", "valueCode",
    "text", "note", "interpretation", "bodySite", "onsetDateTime", "onsetAge", "onsetPeriod", "onsetRange",
    "effectiveDateTime", "effectivePeriod", "issued", "entry", "resource", "fullUrl", "contained",
    "specimen", "referenceRange", "low", "high", "comparator", "unit", "birthDate", "gender",
    "abatementDateTime", "abatementAge", "recordedDate", "dataAbsentReason", "feedback", "card", "outcome",
)  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(TRICKY_STRINGS),
    st.sampled_from(TRICKY_NUMBERS),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


#: A value nested ``depth`` levels deep, as a marker string ``_dumps`` expands in the JSON text:
#: Python objects that deep would hit the recursion limit in ``copy`` and ``json`` (at a stack
#: depth that varies, which hypothesis reports as a flaky strategy).
_NEST = "\x00nest:{depth}\x00"
_NESTED = re.compile(r'"\\u0000nest:([0-9]+)\\u0000"')


def _nested(match: re.Match[str]) -> str:
    depth = int(match[1])
    return (
        '{"value":' * (depth // 2)
        + "[" * (depth - depth // 2)
        + "1"
        + "]" * (depth - depth // 2)
        + "}" * (depth // 2)
    )


def _pick(draw: st.DrawFn, choices: Sequence[Any]) -> Any:
    """One of ``choices`` by index: ``sampled_from`` would hash every element of a new list."""
    return choices[draw(st.integers(0, len(choices) - 1))]


@st.composite
def mutated(draw: st.DrawFn, doc: Any, max_mutations: int = 3) -> Any:
    """``doc`` (not changed) with 1 to ``max_mutations`` mutations where hypothesis chooses."""
    doc = orjson.loads(orjson.dumps(doc))  # a copy (copy.deepcopy is ten times slower)
    for _ in range(draw(st.integers(1, max_mutations))):
        path = _pick(draw, list(_paths(doc)))
        op = draw(st.sampled_from(("replace", "replace", "wrong-type", "delete", "nest", "add-key")))
        old = _parent(doc, path)[path[-1]] if path else doc
        if op == "replace":
            new = draw(json_values)
        elif op == "wrong-type":
            new = _pick(draw, [[old], {"value": old}, str(old)[:100], 1, True, None])
        elif op == "nest":
            new = _NEST.format(depth=draw(st.sampled_from((2, 50, 300, 1000, 1020, 1100))))
        elif op == "add-key" and isinstance(old, dict):
            old[draw(st.sampled_from(KEYS))] = draw(json_values)
            continue
        elif op == "delete" and path:
            parent = _parent(doc, path)
            del parent[path[-1]]
            continue
        else:
            new = draw(json_values)
        if path:
            _parent(doc, path)[path[-1]] = new
        else:
            doc = new
    return doc


def _dumps(doc: Any) -> bytes:
    """JSON as a careless sender writes it: ints past 64 bits and NaN included (json, not orjson)."""
    text = json.dumps(doc, ensure_ascii=False)
    return _NESTED.sub(_nested, text).encode("utf-8", "surrogatepass")


# --- requests -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to the service."""

    path: str
    body: bytes
    content_type: str = "application/json"
    params: tuple[tuple[str, str], ...] = ()

    def describe(self) -> str:
        return f"POST {self.path} {dict(self.params)} {self.content_type}: {self.body[:300]!r}"


garbage = st.one_of(
    st.binary(max_size=200),
    st.sampled_from((b"", b" ", b"null", b"[]", b"{}", b"{", b'{"resourceType":', b"\xff\xfe", b"NaN")),
    st.sampled_from((b"[" * 1100 + b"]" * 1100, b'{"a":' * 1100 + b"1" + b"}" * 1100)),
)
content_types = st.sampled_from(
    [FHIR_JSON, FHIR_JSON, "application/json", "application/json; charset=utf-8", "text/plain"]
)


@st.composite
def evaluate_calls(draw: st.DrawFn) -> Call:
    """``$evaluate``: a mutated Bundle, single resource or Parameters, or garbage."""
    seed = _pick(draw, bundles())
    shape = draw(st.sampled_from(("bundle", "bundle", "resource", "parameters", "garbage")))
    if shape == "garbage":
        return Call("/fhir/$evaluate", draw(garbage), draw(content_types))
    if shape == "resource":
        seed = _pick(draw, _entries(seed) or [seed])
    elif shape == "parameters":
        name = "bundle" if seed.get("resourceType") == "Bundle" else "resource"
        now = draw(st.sampled_from((NOW_TEXT, *TRICKY_STRINGS[:30])))
        seed = {
            "resourceType": "Parameters",
            "parameter": [{"name": name, "resource": seed}, {"name": "now", "valueDateTime": now}],
        }
    doc = draw(mutated(seed))
    params: tuple[tuple[str, str], ...] = ()
    if shape != "parameters":
        params = (("now", draw(st.sampled_from((NOW_TEXT, NOW_TEXT, *TRICKY_STRINGS[:30])))),)
    kind = draw(st.sampled_from((FHIR_JSON,) * 8 + ("application/json", "text/plain")))
    return Call("/fhir/$evaluate", _dumps(doc), kind, params)


def _safe(request: Any) -> Any:
    """No fuzzed request names a server that could be reached (see module doc)."""
    if isinstance(request, dict) and "fhirServer" in request:
        request["fhirServer"] = SAFE_FHIR_SERVER
    return request


@st.composite
def cds_calls(draw: st.DrawFn) -> Call:
    """A CDS service call with the record of a fixture as prefetch, mutated."""
    service = draw(st.sampled_from(SERVICE_IDS))
    shape = draw(st.sampled_from(("request", "request", "request", "garbage")))
    if shape == "garbage":
        return Call(f"/cds-services/{service}", draw(garbage), draw(content_types))
    request = cds_request(_pick(draw, bundles()), service)
    if draw(st.booleans()):
        request["fhirServer"] = SAFE_FHIR_SERVER
    doc = _safe(draw(mutated(request)))
    return Call(f"/cds-services/{service}", _dumps(doc))


@st.composite
def feedback_calls(draw: st.DrawFn) -> Call:
    """Feedback from the CDS Hooks specification's examples, mutated, or many items at once."""
    service = draw(st.sampled_from((*SERVICE_IDS, "no-such-service")))
    seed = _pick(draw, feedback_seeds())
    shape = draw(st.sampled_from(("mutated", "mutated", "mutated", "many", "garbage")))
    if shape == "garbage":
        return Call(f"/cds-services/{service}/feedback", draw(garbage), draw(content_types))
    doc = draw(mutated(seed))
    items = doc.get("feedback") if isinstance(doc, dict) else None
    if shape == "many" and isinstance(items, list) and items:
        doc["feedback"] = items * draw(st.sampled_from((2, 50, 1000, 20_000)))
    return Call(f"/cds-services/{service}/feedback", _dumps(doc))


#: What the fuzzer sends: every endpoint that reads a body.
calls = st.one_of(evaluate_calls(), evaluate_calls(), cds_calls(), cds_calls(), feedback_calls())


# --- what an answer must be -----------------------------------------------------------------------
def verdict(status: int, body: bytes) -> str:
    """``ok``, ``rejected`` (4xx with an OperationOutcome), ``4xx-without-outcome`` or ``5xx``."""
    if status >= 500:
        return "5xx"
    if status < 400:
        return "ok"
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "4xx-without-outcome"
    issues = doc.get("issue") if isinstance(doc, dict) else None
    if doc.get("resourceType") != "OperationOutcome" or not isinstance(issues, list) or not issues:
        return "4xx-without-outcome"
    return "rejected"


@dataclass(slots=True)
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)  # verdict -> the first call that got it
    report: Callable[[str], None] | None = None  # told each failure as it happens (the long run)

    def add(self, outcome: str, call: Call, detail: str = "") -> None:
        self.counts[outcome] += 1
        self.counts["inputs"] += 1
        if outcome not in ("ok", "rejected"):
            example = f"{call.describe()} -> {detail[:300]}"
            self.first.setdefault(outcome, example)
            if self.report is not None:
                self.report(f"{outcome}: {example}")

    @property
    def failures(self) -> int:
        return self.counts["5xx"] + self.counts["4xx-without-outcome"] + self.counts["unhandled"]


Post = Callable[[Call], tuple[int, bytes]]


def run_batch(
    post: Post, inputs: int, seed: int, tally: Tally, strategy: st.SearchStrategy[Call] = calls
) -> None:
    """``inputs`` calls drawn by hypothesis (fixed seed, no example database), each judged."""

    @hypothesis_seed(seed)
    @settings(
        max_examples=inputs,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(call: Call) -> None:
        try:
            status, body = post(call)
        except Exception as exc:  # the connection broke: the service failed this input
            tally.add("unhandled", call, f"{type(exc).__name__}: {exc}")
            return
        tally.add(verdict(status, body), call, body.decode("utf-8", "replace"))

    one()


# --- the served process ---------------------------------------------------------------------------
def _rss_one(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_split(pid: int) -> tuple[int, int]:
    """Resident memory (KiB, Linux /proc) of the HTTP process ``pid`` and of its children, the
    engine processes."""
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return _rss_one(pid), sum(_rss_one(child) for child in children)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (the engine processes), KiB."""
    return sum(rss_split(pid))


def _mib(pid: int) -> str:
    http, engines = rss_split(pid)
    return f"RSS {(http + engines) / 1024:.0f} MiB (HTTP {http / 1024:.0f}, engines {engines / 1024:.0f})"


PROBE_PATIENT = "Patient/fuzz-probe"  # no fuzzed input names it: its history is its own


@cache
def probe_body() -> bytes:
    """The probe fixture with its one patient renamed ``PROBE_PATIENT``."""
    (pid,) = expected_alerts(PROBE)
    old = pid.split("/", 1)[1]
    new = PROBE_PATIENT.split("/", 1)[1]
    text = PROBE.read_text().replace(f'"Patient/{old}"', f'"{PROBE_PATIENT}"')
    return (
        text.replace(f'"id": "{old}"', f'"id": "{new}"')
        .replace(f"/Patient/{old}", f"/{PROBE_PATIENT}")
        .encode()
    )


def expected_alerts(path: Path) -> dict[str, set[str]]:
    expected = orjson.loads(path.with_name(path.name.removesuffix(".json") + ".expected.json").read_bytes())
    return {pid: {a["rule"] for a in fired} for pid, fired in expected["patients"].items() if fired}


def answered_alerts(bundle: dict[str, Any]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for entry in bundle.get("entry", ()):
        res = entry["resource"]
        if res["resourceType"] == "Flag":
            found.setdefault(res["subject"]["reference"], set()).add(res["code"]["coding"][0]["code"])
    return found


def probe(session: Any, url: str) -> float:
    """The normal call: ``/healthz`` and a known fixture with its expected alerts; its seconds."""
    health = session.get(f"{url}/healthz", timeout=30)
    if health.status_code != 200:
        raise AssertionError(f"/healthz answered {health.status_code}")
    started = time.perf_counter()
    answer = session.post(
        f"{url}/fhir/$evaluate",
        data=probe_body(),
        params={"now": NOW_TEXT},
        headers={"Content-Type": FHIR_JSON},
        timeout=60,
    )
    took = time.perf_counter() - started
    (rules,) = expected_alerts(PROBE).values()
    expected = {PROBE_PATIENT: rules}
    if answer.status_code != 200 or answered_alerts(answer.json()) != expected:
        raise AssertionError(f"the known call answered {answer.status_code}: {answer.text[:300]}")
    return took


def http_post(session: Any, url: str) -> Post:
    def post(call: Call) -> tuple[int, bytes]:
        headers = {"Content-Type": call.content_type} if call.content_type else {}
        answer = session.post(
            f"{url}{call.path}", data=call.body, params=dict(call.params), headers=headers, timeout=120
        )
        return answer.status_code, answer.content

    return post


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs in all (default 100,000)")
    parser.add_argument("--batch", type=int, default=2_000, help="inputs between two health checks")
    parser.add_argument("--seed", type=int, default=1, help="hypothesis seed of the first batch")
    parser.add_argument("--workers", type=int, default=1, help="engine processes of the service")
    args = parser.parse_args(argv)

    import requests

    from tests.service_harness import running_service

    tally = Tally(report=lambda failure: print(failure[:2000], flush=True))
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_service(Path(tmp), "--allow-unauthenticated", "--workers", str(args.workers)) as service,
    ):
        session = requests.Session()
        probe(session, service.url)  # warm: the first evaluation compiles nothing, but fills caches
        baseline = min(probe(session, service.url) for _ in range(5))
        rss_before = rss_kib(service.process.pid)
        print(f"normal call {baseline * 1000:.1f} ms, {_mib(service.process.pid)}", flush=True)
        started = time.monotonic()
        batch = 0
        while tally.counts["inputs"] < args.inputs:
            size = min(args.batch, args.inputs - tally.counts["inputs"])
            run_batch(http_post(session, service.url), size, args.seed + batch, tally)
            batch += 1
            alive = "alive"
            try:
                took = min(probe(session, service.url) for _ in range(3))
            except Exception as exc:
                alive, took = f"NOT ANSWERING ({type(exc).__name__}: {str(exc)[:200]})", float("nan")
            print(
                f"batch {batch}: {tally.counts['inputs']} inputs in {time.monotonic() - started:.0f} s; "
                f"ok {tally.counts['ok']}, 4xx+OperationOutcome {tally.counts['rejected']}, "
                f"5xx {tally.counts['5xx']}, "
                f"4xx without OperationOutcome {tally.counts['4xx-without-outcome']}, "
                f"unhandled {tally.counts['unhandled']}; {alive}, normal call {took * 1000:.1f} ms "
                f"({took / baseline:.2f}x), {_mib(service.process.pid)}",
                flush=True,
            )
            if alive != "alive":
                break
        rss_after = rss_kib(service.process.pid)
    print(
        f"inputs tried: {tally.counts['inputs']}\nunhandled errors: {tally.counts['unhandled']}\n"
        f"5xx: {tally.counts['5xx']}\n4xx without OperationOutcome: {tally.counts['4xx-without-outcome']}\n"
        f"4xx with OperationOutcome: {tally.counts['rejected']}\n2xx: {tally.counts['ok']}\n"
        f"RSS before/after: {rss_before / 1024:.0f} / {rss_after / 1024:.0f} MiB"
    )
    for outcome, example in tally.first.items():
        print(f"first {outcome}: {example}")
    return 1 if tally.failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # tests.service_harness
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
