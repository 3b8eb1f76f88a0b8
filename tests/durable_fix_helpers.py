"""Run a durable-rules reproduction in its own interpreter, as the engine's C code sees it.

The scripts use durable directly (no ``engine``), so the same tests run against any build: the
installed patched one by default, another interpreter named by ``REDFLAGS_DURABLE_PYTHON``, or a
folder named by ``REDFLAGS_DURABLE_PATH`` holding another build (scripts/durable_fix_check.py
builds the engine without one fix at a time there and shows that fix's tests fail).
``MALLOC_PERTURB_`` makes glibc fill fresh and freed memory with a non-zero byte, so reading
uninitialised or freed memory crashes every time instead of by luck; a crash (a signal) fails
the test, never the pytest process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass

#: a quiet host (no timer threads) and ``compile_ruleset(name, define)`` -> durable Ruleset
PRELUDE = """
import json
import durable.engine as de
import durable.lang as dl
import durable_rules_engine as dre
from durable.lang import c, m, when_all, when_any

class Quiet(de.Host):
    def _run(self):
        return

HOST = Quiet()

def compile_ruleset(name, define):
    with dl.ruleset(name):
        define()
    rname, body = dl._rulesets.pop(name).define()
    HOST.register_rulesets({rname: body})
    return HOST.get_ruleset(rname)

def assert_batch(rs, facts):
    \"\"\"The lower-level batch assert, then every action of its session, as engine/session.py does.\"\"\"
    code, state = dre.assert_facts(rs._handle, json.dumps(facts))
    errors = []
    rs.do_actions(state, lambda error, _state: errors.append(error))
    return code, [e for e in errors if e is not None]
"""

#: glibc fills allocations with ~165 and freed blocks with 165: garbage is never NULL
PERTURB = "165"


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


def interpreter() -> str:
    """The Python whose durable-rules is under test (default: this one, the patched build)."""
    return os.environ.get("REDFLAGS_DURABLE_PYTHON") or sys.executable


def _child_env() -> dict[str, str]:
    """``REDFLAGS_DURABLE_PATH``: a folder holding another durable build, first on the child's path."""
    env = {**os.environ, "MALLOC_PERTURB_": PERTURB, "PYTHONFAULTHANDLER": "1"}
    other = os.environ.get("REDFLAGS_DURABLE_PATH")
    if other:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (other, env.get("PYTHONPATH")) if p)
    return env


def run_durable(*parts: str, timeout: float = 120, valgrind: bool = False) -> Run:
    """Run PRELUDE and the parts (each dedented) in a fresh interpreter: exit code and output."""
    source = "\n".join(textwrap.dedent(part) for part in (PRELUDE, *parts))
    env = _child_env()
    args = [interpreter(), "-c", source]
    if valgrind:
        env["PYTHONMALLOC"] = "malloc"
        env.pop("MALLOC_PERTURB_")
        args = ["valgrind", "--quiet", *args]
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    return Run(done.returncode, done.stdout, done.stderr)


def has_valgrind() -> bool:
    return shutil.which("valgrind") is not None


def engine_reports(valgrind_err: str) -> list[str]:
    """valgrind's error reports that pass through durable's extension module (not Python's own)."""
    reports = re.split(r"^==\d+== ?$", valgrind_err, flags=re.MULTILINE)
    return [r.strip() for r in reports if "durable_rules_engine" in r]
