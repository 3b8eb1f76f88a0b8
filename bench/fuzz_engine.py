"""Differential fuzzing of the engine: durable-rules against a plain evaluation of the same rules.

Random fact sets (hypothesis) go to the engine as the pipeline runs it (``engine.session``, in
a worker process of its own, so a crash of the C engine is a reported case, not a dead run) and
to ``tests.reference_evaluator`` (plain Python over the same compiled rules). The alerts must be
the same: rule, tier and the set of evidence references.

Facts are drawn from what the rules read: the (kind, key) pairs of every compiled condition,
the constants of their tests (thresholds, windows: each with its neighbours), the fixture
corpus' own facts as templates and as whole patients, plus noise (keys no rule reads, missing
numbers, both sides, preliminary flags, duplicates). The short run is
``tests/test_engine_differential.py``; the long one, on demand::

    python -m bench.fuzz_engine --n 100000            # seed 1; prints cases/s, differences, crashes
    python -m bench.fuzz_engine --n 2000 --seed 7

A difference is printed with a minimal reproducer (facts removed one at a time while the
difference stays), a crash with the case that caused it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from engine.expr import Binary, Const, Exists, Node
from tests.reference_evaluator import Compiled, Outcome, Reference, compile_rules

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_741_608_000  # 2025-03-10T12:00:00Z, the fixtures' own "now"
PID = "Patient/fuzz"
#: facts per generated case beyond a seed patient's (the reference enumerates combinations)
MAX_EXTRA = 10
#: seed patients larger than this are left out (their combinations cost the reference most)
MAX_SEED_FACTS = 24
Fact = dict[str, Any]
Case = tuple[str, list[Fact]]


# -- what the rules read ------------------------------------------------------------------------
def _walk_json(pattern: Any, attr: str | None, out: dict[str, set[Any]]) -> None:
    if isinstance(pattern, list):
        for p in pattern:
            _walk_json(p, attr, out)
        return
    if not isinstance(pattern, dict):
        if attr is not None:
            out.setdefault(attr, set()).add(pattern)
        return
    for key, arg in pattern.items():
        if key in ("$and", "$or"):
            _walk_json(arg, None, out)
        elif key in ("$ex", "$nex"):
            for name in arg:
                out.setdefault(name, set())
        elif key in ("$l", "$r"):
            _walk_json(arg, attr, out)
        elif key == "$m":
            out.setdefault(str(arg), set())
        elif key.startswith("$"):
            _walk_json(arg, attr, out)
        else:
            _walk_json(arg, key, out)


def _walk_node(node: Node, out: dict[str, set[Any]]) -> None:
    """Constants of a cross-fact test, filed under every property the test reads."""
    consts: list[Any] = []

    def visit(n: Node) -> None:
        if isinstance(n, Const):
            consts.append(n.constant)
        elif isinstance(n, Binary):
            visit(n.left)
            visit(n.right)
        elif isinstance(n, Exists):
            visit(n.attr)

    visit(node)
    for _index, name in node.attrs():
        out.setdefault(name, set()).update(consts)


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: strategies are cached on it
class Vocabulary:
    """Per (kind, key) the properties the rules test and the constants they compare them with."""

    reads: dict[tuple[str, str | None], dict[str, set[Any]]]
    numbers: tuple[float, ...]  # every numeric constant of a "v" test, any key
    ages: tuple[int, ...]  # every constant of an age-like test, seconds

    @property
    def keys(self) -> list[tuple[str, str]]:
        return sorted((k, key) for k, key in self.reads if key is not None and k != "derived")


_AGES = ("age", "onset_age", "first_onset_age", "side_onset_age", "prev_age")


def vocabulary(compiled: Compiled) -> Vocabulary:
    reads: dict[tuple[str, str | None], dict[str, set[Any]]] = {}
    for rule in compiled.rules:
        for cond in rule.conds:
            found = reads.setdefault((cond.kind, cond.key), {})
            _walk_json(cond.pattern, None, found)
            for node in cond.cross:
                _walk_node(node, found)
    numbers = {float(c) for r in reads.values() for c in r.get("v", ()) if isinstance(c, int | float)}
    ages = {int(c) for r in reads.values() for a in _AGES for c in r.get(a, ()) if isinstance(c, int | float)}
    # properties in a fixed order: the set walks above follow string hashes, which differ per
    # process (PYTHONHASHSEED), and the draws follow this order: a seed must give the same cases
    fixed = {k: {name: found[name] for name in sorted(found)} for k, found in reads.items()}
    return Vocabulary(fixed, tuple(sorted(numbers)), tuple(sorted(a for a in ages if a >= 0)))


# -- seeds: the fixture corpus' patients --------------------------------------------------------
@cache
def _terminology() -> Any:
    from fhir_adapters import terminology
    from rulesets import VALUESET_DIR

    return terminology.load(VALUESET_DIR, (), ())


@cache
def always_valued() -> frozenset[str]:
    """Value keys whose facts always hold a number (a date/time: no interpretation-only result)."""
    return frozenset(k for k, info in _terminology().keys.items() if info.kind == "datetime")


@cache
def seeds() -> tuple[Case, ...]:
    """Every fixture patient evaluated at NOW, as the pipeline maps it (facts, no engine)."""
    from fhir_adapters.facts import patient_facts
    from fhir_adapters.intake import read_path
    from redflags.replay.corpus import load_expectation
    from tests.reference_rules import REFERENCE_RULES

    term = _terminology()
    out: list[Case] = []
    for rule in REFERENCE_RULES:
        for path in sorted((ROOT / "fixtures" / rule).glob("*.json")):
            if path.name.endswith(".expected.json"):
                continue
            expectation = load_expectation(path)
            if expectation is not None and expectation.now != NOW:
                continue
            for group in read_path(path).patients.values():
                facts = patient_facts(group, term).facts
                if 0 < len(facts) <= MAX_SEED_FACTS:
                    out.append((group.pid, [dict(f) for f in facts]))
    return tuple(out)


# -- strategies ---------------------------------------------------------------------------------
SIDES = ("left", "right", "bilateral", "unknown")
NOISE_KEYS = ("fuzz_noise", "headache")


@cache
def _pick(*options: Any) -> st.SearchStrategy[Any]:
    """``sampled_from`` built once per set of options (hypothesis validates each new strategy)."""
    return st.sampled_from(options)


@cache
def _keys(vocab: Vocabulary) -> st.SearchStrategy[tuple[str, str]]:
    return st.one_of(_pick(*vocab.keys), st.tuples(_pick("finding", "value"), _pick(*NOISE_KEYS)))


@cache
def _near(values: tuple[float, ...]) -> st.SearchStrategy[float]:
    """A constant or a neighbour of one: the edges where a comparison flips."""
    if not values:
        return st.floats(-10, 1000, allow_nan=False)
    return st.builds(
        lambda v, d: v + d,
        _pick(*values),
        _pick(0, 0, 1, -1, 0.01, -0.01, 0.5, -0.5),
    )


@cache
def _number(own: tuple[float, ...], every: tuple[float, ...]) -> st.SearchStrategy[float]:
    """Near this key's own thresholds, near any key's (a ratio's inputs), or any small integer."""
    return st.one_of(_near(own), _near(every), st.integers(0, 200))


@cache
def _age(vocab: Vocabulary) -> st.SearchStrategy[int]:
    edges = st.builds(lambda a, d: max(0, a + d), _pick(*vocab.ages), _pick(0, 0, -1, 1, -3600, 3600))
    return st.one_of(edges, st.integers(0, 400 * 86400), st.just(0), st.integers(-600, 600))


def _birth(years: int, days: int) -> str:
    today = datetime.fromtimestamp(NOW, UTC).date()
    try:
        born = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        born = today.replace(year=today.year - years, day=28)
    return (born + timedelta(days=days)).isoformat()


@cache
def _constants(vocab: Vocabulary, kind: str, key: str | None, name: str) -> tuple[Any, ...]:
    return tuple(
        sorted(
            {c for k in ((kind, key), (kind, None)) for c in vocab.reads.get(k, {}).get(name, ())},
            key=repr,
        )
    )


@st.composite
def a_fact(draw: st.DrawFn, vocab: Vocabulary, ref: str, pid: str) -> Fact:
    """One fact of a kind and key some rule reads (or noise), its properties near the edges."""
    kind, key = draw(_keys(vocab))
    if kind == "patient":
        fact: Fact = {"t": "patient", "pid": pid, "ref": pid}
        years = _constants(vocab, "patient", None, "years") or (50,)
        y = draw(st.builds(lambda y, d: int(y + d), _pick(*years), _pick(0, 1, -1, 30)))
        if draw(st.booleans()):
            fact["birth"] = _birth(max(0, y), draw(_pick(0, 1, -1, 100)))
        if draw(st.booleans()):
            fact["sex"] = draw(_pick("male", "female", "other"))
        return fact
    age = draw(_age(vocab))
    fact = {"t": kind, "pid": pid, "ref": ref, "key": key}
    if kind in ("procedure", "medication"):
        if draw(st.integers(0, 4)):
            fact["ts"] = NOW - age
        if kind == "medication":
            fact["active"] = draw(_pick(1, 1, 0))
        return fact
    fact["ts"] = NOW - age
    fact["onset"] = NOW - age - draw(_pick(0, 0, 0, 3600, 86400, *vocab.ages[:20]))
    fact["side"] = draw(_pick(*SIDES))
    fact["prelim"] = draw(_pick(0, 0, 0, 1))
    for name in ("site", "limb", "interp", "sex"):
        options = _constants(vocab, kind, key, name)
        if options and draw(st.booleans()):
            fact[name] = draw(_pick(*([o for o in options if isinstance(o, str)] or [""])))
    if kind == "finding":
        fact["state"] = draw(_pick("present", "present", "absent"))
        if fact["state"] == "present" or draw(st.booleans()):
            fact["span"] = draw(_pick("event", "state"))
            fact["active"] = draw(_pick(1, 1, 0))
            fact["suspected"] = draw(_pick(0, 0, 1))
        if fact.get("span") == "state" and draw(st.booleans()):
            fact["abated"] = NOW - draw(_age(vocab))
        return fact
    own = tuple(float(c) for c in _constants(vocab, kind, key, "v") if isinstance(c, int | float))
    if key in always_valued() or draw(st.integers(0, 9)):  # else only an interpretation
        fact["v"] = draw(_number(own or vocab.numbers, vocab.numbers))
        fact["unit"] = "1"
    fact["hemolysed"] = draw(_pick(0, 0, 0, 1))
    if draw(st.integers(0, 3)) == 0:
        fact["issued"] = fact["ts"] + draw(_pick(0, 60, 3600))
    if draw(st.integers(0, 2)) == 0 or _constants(vocab, kind, key, "high"):
        if draw(st.booleans()):
            fact["high"] = draw(_pick(0, 1, 5, 100, 200, 500, 0.5))
    if key == "mrc_grade" and "limb" not in fact:
        fact["limb"] = draw(_pick("leg", "arm"))
    return fact


#: What a variant of a seed's fact may change.
VARIED = ("ts", "side", "prelim", "v", "state", "active", "onset")


@st.composite
def a_variant(draw: st.DrawFn, vocab: Vocabulary, fact: Fact, only: tuple[str, ...] = VARIED) -> Fact:
    """A fact of the seed's, shifted: another time, side, flag or number (or unchanged)."""
    out = dict(fact)
    for name in sorted(draw(st.sets(_pick(*only), max_size=2))):  # a set follows string hashes
        if name == "ts" and "ts" in out:
            out["ts"] = NOW - draw(_age(vocab))
        elif name == "onset" and "onset" in out:
            out["onset"] = min(int(out.get("ts", NOW)), NOW - draw(_age(vocab)))
        elif name == "side" and "side" in out:
            out["side"] = draw(_pick(*SIDES))
        elif name == "prelim" and "prelim" in out:
            out["prelim"] = 1 - int(out["prelim"])
        elif name == "v" and "v" in out:
            out["v"] = draw(_near(vocab.numbers))
        elif name == "state" and out.get("t") == "finding":
            out["state"] = "absent" if out.get("state") == "present" else "present"
        elif name == "active" and "active" in out:
            out["active"] = 1 - int(out["active"])
    return out


@st.composite
def cases(draw: st.DrawFn, vocab: Vocabulary, corpus: Sequence[Case]) -> Case:
    """A seed patient (or none), some of its facts varied or dropped, plus generated facts."""
    use_seed = corpus and draw(st.integers(0, 3)) > 0
    pid, base = corpus[draw(_pick(*range(len(corpus))))] if use_seed else (PID, [])
    facts: list[Fact] = []
    for fact in base:
        choice = draw(_pick("keep", "keep", "keep", "vary", "drop", "twice"))
        if choice == "drop":
            continue
        facts.append(draw(a_variant(vocab, fact)) if choice == "vary" else dict(fact))
        if choice == "twice":  # another record saying the same, at the same time or another
            copy = {**fact, "ref": f"{fact.get('ref')}-copy"}
            facts.append(draw(a_variant(vocab, copy, ("ts", "onset"))) if draw(st.booleans()) else copy)
    extra = draw(st.integers(0, MAX_EXTRA if not base else MAX_EXTRA // 2))
    for i in range(extra):
        ref = f"Observation/g{i}" if draw(st.integers(0, 5)) else f"Condition/g{max(0, i - 1)}"
        fact = draw(a_fact(vocab, ref, pid))
        if fact["t"] == "patient" and any(f["t"] == "patient" for f in facts):
            continue  # one Patient per patient (the adapters keep the first)
        facts.append(fact)
    return pid, facts


# -- the engine in its own process ---------------------------------------------------------------
class WorkerDied(Exception):
    pass


def worker_main(params: Mapping[str, Mapping[str, float]] | None) -> None:
    """Evaluate batches read from stdin with the engine; one JSON line out per batch."""
    from engine.session import Engine
    from rulesets import MODULES

    out = os.fdopen(os.dup(1), "w")  # results only: the engine's logs go to /dev/null
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    sys.stdout = os.fdopen(1, "w")
    engine = Engine(MODULES, params=params)
    for line in sys.stdin:
        request = json.loads(line)
        results: list[Any] = []
        for pid, facts in request["cases"]:
            try:
                alerts = engine.evaluate(pid, facts, request["now"]).alerts
                results.append([[a.rule, a.tier, sorted(a.evidence)] for a in alerts])
            except Exception as exc:  # reported as a difference: the reference raised nothing
                results.append({"error": f"{type(exc).__name__}: {exc}"})
        out.write(json.dumps(results) + "\n")
        out.flush()


def worker_command(params: Mapping[str, Mapping[str, float]] | None = None) -> list[str]:
    argv = [sys.executable, "-m", "bench.fuzz_engine", "--worker"]
    return [*argv, "--params", json.dumps(params)] if params else argv


class EngineWorker:
    """A worker process; ``run`` raises WorkerDied with its exit status if it ends mid-batch."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        return subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )

    def run(self, now: int, batch: Sequence[Case]) -> list[Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps({"now": now, "cases": batch}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            status = self.proc.wait()
            self.proc = None
            raise WorkerDied(f"engine process ended with status {status}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


#: An evaluation that failed (the engine raised; the reference's rule function raised).
ERROR = "error"


def _outcome(result: Any) -> Outcome | str:
    if isinstance(result, dict):
        return ERROR
    return frozenset((rule, tier, frozenset(ev)) for rule, tier, ev in result)


# -- the differential ---------------------------------------------------------------------------
@dataclass(slots=True)
class Finding:
    """A difference (engine and reference disagree) or a crash, with the reproducing case."""

    what: str  # "difference" | "crash" | "refused"
    case: Case
    engine: str = ""
    reference: str = ""

    def report(self) -> str:
        pid, facts = self.case
        lines = [f"{self.what}: patient {pid}, now {NOW}, {len(facts)} facts"]
        lines += [f"  engine:    {self.engine}", f"  reference: {self.reference}"]
        lines += [f"  fact: {json.dumps(f, sort_keys=True)}" for f in facts]
        return "\n".join(lines)


@dataclass(slots=True)
class Stats:
    cases: int = 0
    facts: int = 0
    alerts: Counter[str] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    refused: int = 0  # cases the reference found too large
    errors: int = 0  # cases where both failed (a rule's function raised): counted, not differences
    error_examples: list[Finding] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)  # the engine's message: cases

    @property
    def differences(self) -> list[Finding]:
        return [f for f in self.findings if f.what == "difference"]

    @property
    def crashes(self) -> list[Finding]:
        return [f for f in self.findings if f.what == "crash"]


def _show(outcome: Outcome | str) -> str:
    if isinstance(outcome, str):
        return outcome
    return repr(sorted((r, t, sorted(e)) for r, t, e in outcome))


class Differential:
    """Runs cases through the worker and the reference and records what differs."""

    def __init__(self, worker: EngineWorker, reference: Reference) -> None:
        self.worker, self.reference, self.stats = worker, reference, Stats()

    def _reference(self, case: Case) -> Outcome | str | None:
        """The reference's outcome, ERROR when a rule's own function failed, None if refused."""
        try:
            return self.reference.evaluate(case[0], case[1], NOW)
        except OverflowError:
            return None
        except Exception:  # a rule's value or side function: the engine must fail as well
            return ERROR

    def _engine(self, case: Case) -> Outcome | str | None:
        """The engine's outcome, or None after recording a crash."""
        try:
            result = self.worker.run(NOW, [case])[0]
        except WorkerDied as exc:
            self.stats.findings.append(Finding("crash", case, engine=str(exc)))
            return None
        if isinstance(result, dict):
            self.stats.error_kinds[str(result["error"])] += 1
        return _outcome(result)

    def both_fail(self, case: Case) -> bool:
        return self._reference(case) == ERROR and self.differs(case, equal=True)

    def differs(self, case: Case, equal: bool = False) -> bool:
        """Whether engine and reference disagree on ``case`` (crashes count)."""
        expected = self._reference(case)
        if expected is None:
            return False
        try:
            got = _outcome(self.worker.run(NOW, [case])[0])
        except WorkerDied:
            return not equal
        return (got == expected) if equal else (got != expected)

    def check(self, case: Case) -> None:
        expected = self._reference(case)
        if expected is None:
            self.stats.refused += 1
            return
        got = self._engine(case)
        self.stats.cases += 1
        self.stats.facts += len(case[1])
        if got is None:
            return
        if got == expected == ERROR:  # both failed: the rule's own function, not the engine
            self.stats.errors += 1
            if not self.stats.error_examples:
                self.stats.error_examples.append(Finding("error", shrink(case, self.both_fail)))
            return
        if isinstance(got, frozenset):
            self.stats.alerts.update(f"{r}:{t}" for r, t, _e in got)
        if got != expected:
            small = shrink(case, self.differs)
            self.stats.findings.append(
                Finding(
                    "difference",
                    small,
                    engine=_show(self._engine(small) or "crash"),
                    reference=_show(self._reference(small) or frozenset()),
                )
            )


def shrink(case: Case, fails: Callable[[Case], bool]) -> Case:
    """Remove facts one at a time while the case still fails (a minimal reproducer, 1-minimal)."""
    pid, facts = case
    changed = True
    while changed:
        changed = False
        for i in range(len(facts)):
            trial = facts[:i] + facts[i + 1 :]
            if fails((pid, trial)):
                facts, changed = trial, True
                break
    return pid, facts


def run(
    n: int,
    seed: int = 1,
    params: Mapping[str, Mapping[str, float]] | None = None,
    worker_argv: Sequence[str] | None = None,
    stop_after: int = 5,
    progress: int = 0,
) -> Stats:
    """``n`` generated cases through engine and reference (hypothesis, seeded); stop after
    ``stop_after`` findings. ``params``: the engine's site parameters (the reference keeps the
    modules' own, so a planted difference shows that differences are found)."""
    compiled = compile_rules(_modules())
    vocab = vocabulary(compiled)
    worker = EngineWorker(worker_argv or worker_command(params))
    diff = Differential(worker, Reference(compiled))

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(cases(vocab, seeds()))
    def each(case: Case) -> None:
        if len(diff.stats.findings) < stop_after:
            diff.check(case)
            if progress and diff.stats.cases % progress == 0:
                print(f"{diff.stats.cases} cases, {len(diff.stats.findings)} findings", file=sys.stderr)

    try:
        each()
    finally:
        worker.close()
    return diff.stats


def _modules() -> Sequence[Any]:
    from rulesets import MODULES

    return MODULES


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_engine", description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="cases (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stop-after", type=int, default=5, help="stop after this many findings")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--params", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    params = json.loads(args.params) if args.params else None
    if args.worker:
        worker_main(params)
        return 0
    start = time.perf_counter()
    stats = run(args.n, args.seed, params, stop_after=args.stop_after, progress=max(1000, args.n // 20))
    elapsed = time.perf_counter() - start
    fired = sum(stats.alerts.values())
    print(
        f"cases {stats.cases} ({stats.facts} facts) in {elapsed:.1f} s: {stats.cases / elapsed:.0f} cases/s"
    )
    print(
        f"differences {len(stats.differences)}, crashes {len(stats.crashes)}, refused {stats.refused}, "
        f"failed in both {stats.errors}"
    )
    print(f"alerts {fired} over {len(stats.alerts)} rule tiers: {dict(sorted(stats.alerts.items()))}")
    for message, count in stats.error_kinds.most_common():
        print(f"engine failed {count} times: {message}")
    for finding in (*stats.findings, *stats.error_examples):
        print(finding.report())
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())
