"""Helpers shared by the tests of the laboratory-driven rules (electrolytes, rhabdomyolysis,
alcoholic myopathy): evaluate a fixture, evaluate flat facts, run with other parameters."""

from __future__ import annotations

import textwrap

from engine.alert import Alert
from engine.dsl import DAY, HOUR
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline

from .conftest import FIXTURES
from .engine_helpers import isolated

NOW_ISO = "2025-03-10T12:00:00Z"
NOW = 1_741_608_000  # 2025-03-10T12:00:00Z


def fixture_alerts(pipeline: Pipeline, folder: str, name: str) -> list[Alert]:
    """Alerts of the single patient of ``fixtures/<folder>/<name>.json``."""
    (result,) = pipeline.evaluate(read_path(FIXTURES / folder / f"{name}.json"), parse_now(NOW_ISO))
    return result.alerts


def only(alerts: list[Alert], rule: str) -> Alert:
    found = [a for a in alerts if a.rule == rule]
    assert len(found) == 1, alerts
    return found[0]


def lab(pid: str, key: str, v: float, unit: str, hours_ago: float = 1, **extra: object) -> dict:
    """A value fact as ``fhir_adapters.facts`` makes it (canonical unit, not haemolysed)."""
    ts = int(NOW - hours_ago * HOUR)
    ref = f"Observation/{pid[8:]}-{key}-{hours_ago:g}"
    fact = {"t": "value", "pid": pid, "ref": ref, "key": key, "v": v, "unit": unit, "ts": ts, "onset": ts}
    return {"side": "unknown", "prelim": 0, "hemolysed": 0, **fact, **extra}


def finding(pid: str, key: str, days_ago: float = 0.1, src: str = "Observation", **extra: object) -> dict:
    ts = int(NOW - days_ago * DAY)
    fact = {"t": "finding", "pid": pid, "ref": f"{src}/{pid[8:]}-{key}", "key": key, "state": "present"}
    base = {
        "side": "unknown",
        "ts": ts,
        "onset": ts,
        "span": "state" if src == "Condition" else "event",
        "active": 1,
        "suspected": 0,
        "prelim": 0,
    }
    return {**fact, **base, **extra}


def with_params(params: dict, code: str) -> str:
    """Run ``code`` in a fresh interpreter whose ``pipeline`` uses ``params``; its stdout."""
    prelude = textwrap.dedent(f"""
        from pathlib import Path
        from fhir_adapters.intake import read_path
        from fhir_adapters.times import parse_now
        from redflags.pipeline import Pipeline
        pipeline = Pipeline(params={params!r})
        def alerts(folder, name):
            path = Path("fixtures") / folder / f"{{name}}.json"
            (result,) = pipeline.evaluate(read_path(path), parse_now({NOW_ISO!r}))
            return result.alerts
        def tiers(folder, name, rule):
            return [a.severity for a in alerts(folder, name) if a.rule == rule]
    """)
    return isolated(code, prelude)


def explain_cli(rule: str) -> str:
    from .cli_helpers import run

    done = run("rules", "--explain", rule)
    assert done.returncode == 0, done.stderr
    return done.stdout
