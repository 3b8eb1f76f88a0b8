"""Engine facts and a fresh-interpreter runner shared by the engine and per-rule tests."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from engine.dsl import DAY

ROOT = Path(__file__).resolve().parent.parent

NOW = 1_741_608_000  # 2025-03-10T12:00:00Z


def finding(
    pid: str, key: str, ref: str, days_ago: float = 1, side: str = "unknown", src: str = "Observation"
):
    ts = int(NOW - days_ago * DAY)
    return {
        "t": "finding",
        "pid": pid,
        "ref": ref,
        "key": key,
        "state": "present",
        "side": side,
        "ts": ts,
        "onset": ts,
        "span": "state" if src == "Condition" else "event",
        "active": 1,
        "suspected": 0,
        "prelim": 0,
    }


def value(pid: str, key: str, v: float, ref: str, hours_ago: float = 1, unit: str = "mL"):
    ts = int(NOW - hours_ago * 3600)
    return {
        "t": "value",
        "pid": pid,
        "ref": ref,
        "key": key,
        "v": v,
        "unit": unit,
        "ts": ts,
        "onset": ts,
        "side": "unknown",
        "prelim": 0,
    }


def ces_saddle(pid: str) -> list[dict]:
    return [finding(pid, "saddle_anesthesia", f"Observation/{pid[8:]}-saddle")]


def ces_back(pid: str) -> list[dict]:
    return [finding(pid, "back_pain", f"Condition/{pid[8:]}-back", src="Condition")]


ISOLATED_PRELUDE = """
import types
from engine.dsl import Rules, present
from engine.errors import RuleActionError, RuleDefinitionError
from engine.session import Engine
from rulesets import MODULES
from rulesets.meta import SNOMED, Code, RuleMeta, Tier
import sys
sys.path.insert(0, "tests")
from engine_helpers import NOW, ces_back, ces_saddle, value
META = RuleMeta(id="test_rule", version="0.1", title="Test rule", tiers=(Tier("A", "critical", "t"),),
                source_label="t", source_url="https://redflags.dev/t", disorder=Code(SNOMED, "1", "x"),
                actions=())
def module(define):
    mod = types.ModuleType("rulesets.test_rule")
    mod.META, mod.PARAMS, mod.define = META, {}, define
    return mod
"""


def isolated(code: str, prelude: str = ISOLATED_PRELUDE) -> str:
    """Run ``prelude`` + ``code`` in a fresh interpreter (durable-rules hosts one ruleset per
    process); its stdout."""
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
