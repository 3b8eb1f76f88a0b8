"""Several durable-rules rulesets in one process (engine/durable_patches/0005, 0007).

Upstream, a second ruleset in a process aborted it (free(): invalid pointer, reproduced with two
identical rulesets). No defect specific to several rulesets was found (the handle table and
each ruleset's pools are separate): the abort is patch 0005's, a session deleted before any
action started freed its uninitialised action context, whose garbage depends on what the heap
held before (the redflags engine's opening fact hid it for its first ruleset). This test runs
two identical rulesets and a third, interleaved, with sessions that match, sessions that match
nothing and older sessions deleted first, with glibc's perturbed heap; upstream aborts.
See docs/engine.md#several-configurations-in-one-process.
"""

from __future__ import annotations

import pytest

from .durable_fix_helpers import engine_reports, has_valgrind, run_durable

RULES = """
seen = []
def make(name):
    def define():
        @when_all(c.a << (m.t == "a"), c.b << ((m.t == "b") & (m.v <= c.a.v)))
        def joined(c):
            seen.append((name, c.a.sid))
        @when_all(m.t == "o")
        def single(c):
            seen.append((name, c.m.sid))
    return compile_ruleset(name, define)

rulesets = [make("one"), make("two"), make("three")]
for k in range(60):
    for rs in rulesets:
        sid = f"e{k}"
        facts = [{"t": "zz"}]
        if k % 3:
            facts += [{"t": "a", "v": 3.0}, {"t": "b", "v": 2.0}, {"t": "o"}]
        assert_batch(rs, [{**f, "sid": sid, "id": i} for i, f in enumerate(facts)])
        if k % 4 == 3:  # keep this one, delete the one before it (not the newest)
            rs.delete_state(f"e{k - 1}")
        elif k % 4 != 2:
            rs.delete_state(sid)
print(len(seen), len({name for name, _ in seen}))
"""

#: 40 of the 60 sessions match both rules in each of the three rulesets
EXPECTED = ["240 3"]


def test_three_rulesets_in_one_process_each_evaluate_their_own_sessions() -> None:
    run = run_durable(RULES)
    assert (run.code, run.lines) == (0, EXPECTED), run.err


@pytest.mark.skipif(not has_valgrind(), reason="valgrind is not installed")
def test_valgrind_finds_no_memory_error_with_three_rulesets() -> None:
    run = run_durable(RULES, timeout=900, valgrind=True)
    assert engine_reports(run.err) == []
    assert (run.code, run.lines) == (0, EXPECTED), run.err
