"""Random engine facts for every key the rules read, and the alerts the rules give them.

The rule language was rewritten under a fixed outcome: the alerts of this seeded corpus were
recorded with the rulesets as they were before (``tests/golden/rulelang_corpus.jsonl``) and
``tests/test_rulelang_equivalence.py`` checks that the rulesets give the same alerts now. Values
are drawn near every numeric parameter of every rule (x0.5 ... x2, and exactly on it), so the
thresholds are crossed both ways; times, sides, sites and states are drawn from small sets, so
joins (same side, after, before) both hold and fail.

Run as ``python -m tests.rulelang_corpus OUT [N]`` it writes one JSON line per case to OUT (its
own process: one rules configuration per process).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import orjson

from engine.dsl import DAY, HOUR
from engine.session import Engine
from rulesets import MODULES

#: what the rules read when the corpus was recorded (``inputs``), fixed
INPUTS = Path(__file__).resolve().parent / "golden" / "rulelang_corpus.inputs.json"
GOLDEN = INPUTS.with_name("rulelang_corpus.jsonl")
NOW = 1_741_608_000  # 2025-03-10T12:00:00Z
SEED = 15
CASES = 1500
PID = "Patient/c"
AGES = (0, 1 * HOUR, 3 * HOUR, 5 * HOUR, 20 * HOUR, 2 * DAY, 6 * DAY, 10 * DAY, 20 * DAY, 60 * DAY, 200 * DAY)
SIDES = ("left", "right", "bilateral", "unknown")
SITES = ("", "61685007", "quadriceps", "tibialis_anterior")
DATETIMES = ("lkw_time",)
FACTORS = (0, 0.5, 0.9, 0.99, 1, 1.01, 1.1, 2, -1)


def inputs(engine: Engine) -> dict[str, Any]:
    """Per rule, the (kind, key) of the records it or a shared building block reads; the numbers
    its parameters hold. Written once into ``INPUTS``: the corpus stays the same when the rules
    are rewritten."""
    pools: dict[str, set[tuple[str, str]]] = {}
    for spec in (*engine.specs, *engine.censor_specs):
        pool = pools.setdefault(spec.rule, set())
        for cond in spec.conds:
            if cond.kind in ("finding", "value", "medication", "procedure") and cond.key:
                pool.add((cond.kind, cond.key))
        if spec.does == "censor":
            pool.add(("medication", spec.after))
    shared = pools.pop("common")
    numbers = {float(v) for p in engine.params.values() for v in p.values()} | {1.0, 3.0, 5.0, 100.0}
    return {
        "pools": {rule: sorted(pool | shared) for rule, pool in sorted(pools.items())},
        "numbers": sorted(numbers),
    }


def _fact(rng: random.Random, kind: str, key: str, numbers: list[float], n: int) -> dict[str, Any]:
    ts = NOW - rng.choice(AGES) - rng.randrange(0, 60)
    fact: dict[str, Any] = {"t": kind, "pid": PID, "ref": f"R/{n}", "key": key, "ts": ts}
    fact["side"] = rng.choice(SIDES)
    if rng.random() < 0.3:
        fact["site"] = rng.choice(SITES)
        fact["limb"] = rng.choice(("leg", "arm"))
    if rng.random() < 0.9 or kind == "finding":  # every finding dated (engine.prepare)
        fact["onset"] = ts - rng.choice((0, 0, HOUR, 2 * DAY, 100 * DAY))
    if kind == "finding":
        span = rng.choice(("event", "state"))
        fact.update(
            state=rng.choice(("present", "present", "present", "absent")),
            span=span,
            active=rng.choice((1, 1, 0)),
            suspected=rng.choice((0, 0, 0, 1)),
            prelim=rng.choice((0, 0, 0, 1)),
        )
        if span == "state" and rng.random() < 0.2:
            fact["abated"] = ts + rng.choice((HOUR, 30 * DAY))
    elif kind == "value":
        fact.update(prelim=rng.choice((0, 0, 0, 1)), hemolysed=rng.choice((0, 0, 0, 1)), unit="u")
        if key in DATETIMES:  # a time, always a number (fhir_adapters.facts)
            fact["v"] = ts - rng.choice((0, HOUR, 3 * HOUR, 5 * HOUR, 30 * HOUR))
        elif rng.random() < 0.95:
            fact["v"] = round(rng.choice(numbers) * rng.choice(FACTORS), 4)
        if rng.random() < 0.3:
            fact["high"] = round(rng.choice(numbers) * rng.choice((0.5, 1, 2)), 4)
        if rng.random() < 0.3:
            fact["interp"] = rng.choice(("H", "HH", "L", "LL", "N", "A"))
        if rng.random() < 0.1:
            fact["issued"] = ts + rng.choice((0, 60))
        if rng.random() < 0.1:
            fact["nih"] = rng.choice((0, 1, 4, 8))
    elif kind == "medication":
        fact["active"] = rng.choice((1, 1, 0))
    return fact


def case(rng: random.Random, pools: dict[str, list[list[str]]], numbers: list[float]) -> list[dict[str, Any]]:
    pool = pools[rng.choice(sorted(pools))]
    facts: list[dict[str, Any]] = []
    if rng.random() < 0.8:
        birth = rng.choice(("1940-05-01", "1970-03-11", "1974-03-10", "2001-12-31"))
        facts.append({"t": "patient", "pid": PID, "ref": PID, "birth": birth})
    # a few related keys per case, several records of some, so rules can fire and joins pair
    chosen = rng.sample(pool, k=rng.randint(2, min(12, len(pool))))
    for n, (kind, key) in enumerate(chosen * 2 if rng.random() < 0.3 else chosen):
        for _ in range(rng.choice((1, 1, 2, 3))):
            facts.append(_fact(rng, kind, key, numbers, n * 10 + len(facts)))
    return facts


def _alert(alert: Any) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "version": alert.version,
        "tier": alert.tier,
        "rationale": alert.rationale,
        "evidence": list(alert.evidence),
        "notes": list(alert.notes),
        "episode": alert.episode,
        "suspected": alert.suspected,
        "preliminary": alert.preliminary,
        "disorder": alert.disorder.code if alert.disorder else None,
    }


def run(cases: int = CASES) -> list[bytes]:
    engine = Engine(MODULES)
    given = orjson.loads(INPUTS.read_bytes())
    rng = random.Random(SEED)
    lines = []
    for i in range(cases):
        facts = case(rng, given["pools"], given["numbers"])
        try:
            alerts = engine.evaluate(PID, facts, NOW).alerts
        except Exception as exc:  # recorded: the same input must fail the same way
            lines.append(orjson.dumps({"case": i, "error": type(exc).__name__}))
            continue
        lines.append(orjson.dumps({"case": i, "alerts": [_alert(a) for a in alerts]}))
    return lines


if __name__ == "__main__":
    if sys.argv[1:] == ["--inputs"]:
        sys.stdout.buffer.write(orjson.dumps(inputs(Engine(MODULES)), option=orjson.OPT_INDENT_2) + b"\n")
        sys.exit(0)
    # the engine logs to stdout: the corpus goes to the file named
    Path(sys.argv[1]).write_bytes(
        b"".join(line + b"\n" for line in run(int(sys.argv[2]) if len(sys.argv) > 2 else CASES))
    )
