"""Helpers for per-rule tests: evaluate fixtures, and evaluate them under site parameters."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from engine.alert import Alert
from fhir_adapters.intake import read_path
from fhir_adapters.times import parse_now
from redflags.pipeline import Pipeline

from .conftest import FIXTURES, ROOT

NOW = "2025-03-10T12:00:00Z"


def alerts_of(pipeline: Pipeline, rule: str, name: str) -> list[Alert]:
    """The alerts of the one patient in ``fixtures/<rule>/<name>.json``."""
    (result,) = pipeline.evaluate(read_path(FIXTURES / rule / f"{name}.json"), parse_now(NOW))
    return result.alerts


def alert_of(pipeline: Pipeline, rule: str, name: str) -> Alert:
    (alert,) = [a for a in alerts_of(pipeline, rule, name) if a.rule == rule]
    return alert


def with_params(
    params: Mapping[str, Mapping[str, float]], rule: str, names: Sequence[str]
) -> dict[str, list]:
    """{fixture name: [[rule, severity], ...]} under site ``params``, in a fresh process.

    durable-rules hosts one rules configuration per process, so another parameter set needs
    its own interpreter.
    """
    paths = [str(FIXTURES / rule / f"{name}.json") for name in names]
    code = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from fhir_adapters.intake import read_path
        from fhir_adapters.times import parse_now
        from redflags.pipeline import Pipeline
        pipeline = Pipeline(params={dict(params)!r})
        out = {{}}
        for name, path in zip({list(names)!r}, {paths!r}):
            (result,) = pipeline.evaluate(read_path(Path(path)), parse_now({NOW!r}))
            out[name] = [[a.rule, a.severity] for a in result.alerts]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def explain_text(rule: str) -> str:
    exe = Path(sys.executable).with_name("redflags")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "redflags.cli"]
    done = subprocess.run(
        [*cmd, "rules", "--explain", rule], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
