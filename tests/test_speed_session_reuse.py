"""A new durable session starts empty although it reuses the last one's state arrays (patch 0012).

engine/durable_patches/0012 keeps the per-rule state of a deleted session and hands it, reset,
to the next one instead of allocating it again. These tests run durable directly in their own
interpreter (tests/durable_fix_helpers.py, glibc filling fresh and freed memory with garbage): a
session that left partial joins in every node, with pools grown past their first size, must
leave nothing a later session can match, and sessions in turn must match as fresh ones do.
"""

from __future__ import annotations

import pytest

from .durable_fix_helpers import engine_reports, has_valgrind, run_durable

#: joins of two and three facts (beta nodes), an `or` group (connector), a single-fact rule
RULES = """
seen = []
def define():
    @when_all(c.a << (m.t == "a"), c.b << (m.t == "b"))
    def two(c):
        seen.append(("two", c.s.sid, c.a.n, c.b.n))
    @when_all(c.a << (m.t == "a"), c.b << (m.t == "b"), c.x << (m.t == "x"))
    def three(c):
        seen.append(("three", c.s.sid, c.a.n, c.b.n, c.x.n))
    @when_any(c.y << (m.t == "y"), c.z << (m.t == "z"))
    def either(c):
        seen.append(("either", c.s.sid, (c.y or c.z).n))
    @when_all(m.t == "session")
    def opened(c):
        pass
rs = compile_ruleset("rs", define)

def session(sid, facts):
    rows = [{"sid": sid, "id": 0, "t": "session"}]
    rows += [{"sid": sid, "id": i + 1, **f} for i, f in enumerate(facts)]
    code, errors = assert_batch(rs, rows)
    assert not errors, errors
    rs.delete_state(sid)
    got = sorted(r[2:] for r in seen if r[1] == sid)
    return code, got
"""

PARTIAL = """
# 40 facts of each left half: every left pool grows past its 8 first frames, no join completes
print(session("left", [{"t": "a", "n": i} for i in range(40)] + [{"t": "y", "n": 1}]))
# only the other halves: a join with anything the first session left would show here
print(session("right", [{"t": "b", "n": 7}, {"t": "x", "n": 8}]))
print(session("whole", [{"t": "a", "n": 1}, {"t": "b", "n": 2}, {"t": "x", "n": 3}, {"t": "z", "n": 4}]))
"""

EXPECTED = [
    "(0, [(1,)])",
    "(0, [])",
    "(0, [(1, 2), (1, 2, 3), (4,)])",
]


def test_a_session_after_one_with_partial_joins_matches_nothing_of_it() -> None:
    run = run_durable(RULES, PARTIAL)
    assert (run.code, run.lines) == (0, EXPECTED), run.err


def test_many_sessions_in_turn_match_as_fresh_ones() -> None:
    run = run_durable(
        RULES,
        """
        results = set()
        for i in range(300):
            facts = [{"t": "a", "n": k} for k in range(i % 13)] + [{"t": "b", "n": 99}]
            if i % 3 == 0:
                facts.append({"t": "x", "n": 5})
            code, got = session(f"s{i}", facts)
            twos = [g for g in got if len(g) == 2]
            threes = [g for g in got if len(g) == 3]
            results.add(len(twos) == i % 13 and len(threes) == (i % 13 if i % 3 == 0 else 0))
        print(results)
        """,
    )
    assert (run.code, run.lines) == (0, ["{True}"]), run.err


@pytest.mark.skipif(not has_valgrind(), reason="valgrind is not installed")
def test_reused_session_state_reads_no_freed_or_uninitialised_memory() -> None:
    run = run_durable(RULES, PARTIAL, valgrind=True, timeout=600)
    assert (run.code, run.lines) == (0, EXPECTED), run.err
    assert engine_reports(run.err) == []
