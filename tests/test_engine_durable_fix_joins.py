"""durable-rules' cross-fact join tests, fixed in its C code (engine/durable_patches/0008).

A join test that failed as the last test of its group made durable skip past the group's end
and read beyond the test list (valgrind: uninitialised reads in reduceExpressionSequence; a
SIGSEGV in redflags' rules), and a group ended the group around it, so tests after an ``|``
group were never evaluated (a false match). Each test runs durable directly in its own
interpreter (tests/durable_fix_helpers.py). The engine still evaluates cross-fact tests in
Python (docs/engine.md#cross-fact-joins) until issue 15 item 4.
"""

from __future__ import annotations

import pytest

from .durable_fix_helpers import engine_reports, has_valgrind, run_durable

#: one rule per join shape; each prints the sessions it matched
RULES = """
seen = []
def define():
    @when_all(c.a << (m.t == "a"), c.b << ((m.t == "b") & (m.v <= c.a.v)))
    def last_test(c):
        seen.append(("last_test", c.a.sid))
    @when_all(
        c.a << (m.t == "x"),
        c.b << ((m.t == "y") & ((m.i == "H") | (m.i == "HH")) & (m.v > c.a.v * 1000)),
    )
    def after_or(c):
        seen.append(("after_or", c.a.sid))
    @when_all(
        c.a << (m.t == "p"),
        c.b << ((m.t == "q") & ((m.v > c.a.v * 1000) | (m.v < c.a.v)) & (m.w >= c.a.v)),
    )
    def join_or(c):
        seen.append(("join_or", c.a.sid))
rs = compile_ruleset("rs", define)

def run(sid, facts):
    assert_batch(rs, [{**f, "sid": sid, "id": i} for i, f in enumerate(facts)])
"""

#: (session, facts, the rule that must match it or None), each decided by the rule as written
CASES = [
    ("last_fails", [{"t": "a", "v": 3.0}, {"t": "b", "v": 4.0}], None),
    ("last_holds", [{"t": "a", "v": 3.0}, {"t": "b", "v": 2.0}], "last_test"),
    ("or_then_fails", [{"t": "x", "v": 3.0}, {"t": "y", "v": 4.0, "i": "H"}], None),
    ("or_then_holds", [{"t": "x", "v": 0.001}, {"t": "y", "v": 4.0, "i": "HH"}], "after_or"),
    ("or_fails", [{"t": "x", "v": 0.001}, {"t": "y", "v": 4.0, "i": "L"}], None),
    ("join_or_first", [{"t": "p", "v": 0.001}, {"t": "q", "v": 4.0, "w": 1.0}], "join_or"),
    ("join_or_second", [{"t": "p", "v": 5.0}, {"t": "q", "v": 4.0, "w": 6.0}], "join_or"),
    ("join_or_then_fails", [{"t": "p", "v": 5.0}, {"t": "q", "v": 4.0, "w": 1.0}], None),
    ("join_or_neither", [{"t": "p", "v": 3.0}, {"t": "q", "v": 4.0, "w": 9.0}], None),
]

SCRIPT = "\n".join(f"run({sid!r}, {facts!r})" for sid, facts, _ in CASES) + "\nprint(sorted(seen))"


def _expected() -> str:
    return str(sorted((rule, sid) for sid, _, rule in CASES if rule))


def test_each_join_test_is_evaluated_once_and_in_full() -> None:
    run = run_durable(RULES, SCRIPT)
    assert (run.code, run.lines) == (0, [_expected()]), run.err


@pytest.mark.skipif(not has_valgrind(), reason="valgrind is not installed")
def test_valgrind_finds_no_read_past_the_join_tests() -> None:
    """The failing last test no longer reads beyond the list (valgrind reported it upstream)."""
    run = run_durable(RULES, SCRIPT, timeout=600, valgrind=True)
    assert engine_reports(run.err) == []
    assert (run.code, run.lines) == (0, [_expected()]), run.err
