"""No value a hospital can send makes a rule's calculation fail (docs/engine.md#cross-fact-joins).

Every derivation's ``value=`` / ``side=`` function runs only on facts its conditions accepted,
so a division or a read of ``v`` is safe only when the condition says "above 0" or "with a
value". This drives every ruleset with the seeded facts of ``tests/rulelang_corpus.py`` (each
rule's own keys, values on and around its parameters) after pushing them to the edges a real
record reaches: numbers of 0, below 0 and tiny; no number at all (a result with only an
interpretation); a laboratory upper limit of 0; findings with no date (a Condition exported
without onset, recorded date or encounter). Every patient must evaluate.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from redflags.pipeline import Pipeline

from .rulelang_corpus import DATETIMES, INPUTS, NOW, PID, case

SEED = 1515
CASES = 1200
EDGE_NUMBERS = (0, 0.0, -1, -0.5, 1e-9)


def _edged(rng: random.Random, fact: dict[str, Any]) -> dict[str, Any]:
    out = dict(fact)
    if out["t"] == "value" and out["key"] not in DATETIMES and rng.random() < 0.6:
        if rng.random() < 0.25:
            out.pop("v", None)  # only an interpretation
            out.setdefault("interp", rng.choice(("H", "L", "A")))
        else:
            out["v"] = rng.choice(EDGE_NUMBERS)
        if rng.random() < 0.2:
            out["high"] = rng.choice((0, -1))
    # what fhir_adapters.facts may leave undated: a Condition, a medication, a procedure (an
    # Observation without a time is refused at intake; a datetime result always has its time)
    undatable = out["t"] in ("medication", "procedure") or out.get("span") == "state"
    if undatable and rng.random() < 0.2:
        out.pop("ts", None)
        out.pop("onset", None)
    return out


def edge_cases(n: int = CASES) -> list[list[dict[str, Any]]]:
    given = orjson.loads(INPUTS.read_bytes())
    rng = random.Random(SEED)
    return [[_edged(rng, f) for f in case(rng, given["pools"], given["numbers"])] for _ in range(n)]


def test_every_rule_evaluates_every_edge_value(pipeline: Pipeline) -> None:
    failed: dict[str, list[int]] = {}
    fired = 0
    for i, facts in enumerate(edge_cases()):
        try:
            fired += bool(pipeline.engine.evaluate(PID, facts, NOW).alerts)
        except Exception as exc:  # every failure is collected and reported
            failed.setdefault(f"{type(exc).__name__}: {exc}"[:160], []).append(i)
    assert failed == {}
    assert fired > CASES // 4  # the edges did not empty the corpus: rules still fire
