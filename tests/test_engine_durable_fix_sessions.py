"""durable-rules' session and fact tables, fixed in its C code (engine/durable_patches/0004-0007).

Each test runs durable directly in its own interpreter (tests/durable_fix_helpers.py) and fails
on the unpatched build (scripts/durable_fix_check.py shows it). The engine's own workarounds
(docs/engine.md#hash-collisions, #capacity, #empty-sessions, #timer-threads) stay until issue 15
item 4 removes them.
"""

from __future__ import annotations

import pytest

from .durable_fix_helpers import engine_reports, has_valgrind, run_durable

#: two rules, one joining two kinds of fact in one session, one reading single facts
RULES = """
seen = []
def define():
    @when_all(c.k << (m.t == "k"), c.d << (m.t == "d"))
    def joined(c):
        seen.append(("joined", c.k.pid, c.d.pid))
    @when_all(m.t == "o")
    def single(c):
        seen.append(("single", c.m.sid, c.m.n))
rs = compile_ruleset("rs", define)
"""


def test_two_session_ids_with_one_hash_are_two_sessions() -> None:
    # FNV-1 32 of both ids is 340930895: upstream joined one patient's fact with the other's.
    run = run_durable(
        RULES,
        """
        assert_batch(rs, [{"sid": "Patient/208789", "id": 1, "t": "k", "pid": "Patient/208789"}])
        assert_batch(rs, [{"sid": "Patient/1021284", "id": 1, "t": "d", "pid": "Patient/1021284"}])
        print(seen)
        rs.delete_state("Patient/208789")
        print(rs.get_state("Patient/1021284")["sid"])
        """,
    )
    assert (run.code, run.lines) == (0, ["[]", "Patient/1021284"]), run.err


def test_two_fact_ids_with_one_hash_are_two_facts() -> None:
    # Both hash to 41135818: upstream rejected the second as already observed (a lost fact).
    run = run_durable(
        RULES,
        """
        code, errors = assert_batch(rs, [
            {"sid": "s", "id": "Observation/958859", "t": "o", "n": 1},
            {"sid": "s", "id": "Observation/1077102", "t": "o", "n": 2},
        ])
        print(code, sorted(n for _, _, n in seen))
        rs.retract_fact({"sid": "s", "id": "Observation/958859", "t": "o", "n": 1})
        code, errors = assert_batch(rs, [{"sid": "s", "id": "Observation/1077102", "t": "o", "n": 2}])
        print(code)
        """,
    )
    # the retraction removes only its own fact: the other is still there (2 = already observed)
    assert (run.code, run.lines) == (0, ["0 [1, 2]", "2"]), run.err


def test_deleting_a_session_where_no_rule_ran_does_not_abort() -> None:
    # Upstream freed the new session's uninitialised action context: free(): invalid pointer.
    run = run_durable(
        RULES,
        """
        for i in range(20):
            code, _ = assert_batch(rs, [{"sid": f"e{i}", "id": 1, "t": "unread"}])
            rs.delete_state(f"e{i}")
        print("deleted", code)
        """,
    )
    assert (run.code, run.lines) == (0, ["deleted 1"]), run.err


def test_the_session_cap_refuses_one_session_and_does_not_poison_the_ruleset() -> None:
    # Upstream took the 1,025th slot before refusing it and never gave it back: every later
    # session failed, even after deletes, and asserting into the failed one crashed.
    run = run_durable(
        RULES,
        """
        for i in range(1024):
            assert_batch(rs, [{"sid": f"s{i}", "id": 1, "t": "o", "n": i}])
        for attempt in range(3):
            try:
                assert_batch(rs, [{"sid": "over", "id": 1, "t": "o", "n": -1}])
                print("accepted")
            except MemoryError:
                print("refused")
        rs.delete_state("s0")
        assert_batch(rs, [{"sid": "again", "id": 1, "t": "o", "n": 1024}])
        for i in range(1, 1024):
            rs.delete_state(f"s{i}")
        assert_batch(rs, [{"sid": "later", "id": 1, "t": "o", "n": 1025}])
        print(len(seen), seen[-2:])
        """,
    )
    assert run.code == 0, run.err
    assert run.lines == [
        "refused",
        "refused",
        "refused",
        "1026 [('single', 'again', 1024), ('single', 'later', 1025)]",
    ]


def test_deleting_an_older_session_leaves_no_stale_entry_for_the_dispatcher() -> None:
    # Upstream kept the deleted session in the list the dispatch and timer threads walk: they
    # read its freed action state (a crash) and never reached the newest session's actions.
    run = run_durable(
        RULES,
        """
        for sid in ("s0", "s1", "s2"):
            dre.assert_facts(rs._handle, json.dumps([{"sid": sid, "id": 1, "t": "o", "n": 0}]))
        rs.delete_state("s0")
        rs.delete_state("s1")
        for _ in range(3):
            rs.dispatch()
        print(seen)
        """,
    )
    assert (run.code, run.lines) == (0, ["[('single', 's2', 0)]"]), run.err


@pytest.mark.skipif(not has_valgrind(), reason="valgrind is not installed")
def test_valgrind_finds_no_memory_error_in_the_session_table() -> None:
    """The three memory errors above, under valgrind: no report passes through durable."""
    run = run_durable(
        RULES,
        """
        code, _ = assert_batch(rs, [{"sid": "empty", "id": 1, "t": "unread"}])
        rs.delete_state("empty")
        for sid in ("s0", "s1", "s2"):
            dre.assert_facts(rs._handle, json.dumps([{"sid": sid, "id": 1, "t": "o", "n": 0}]))
        rs.delete_state("s0")
        rs.dispatch()
        rs.delete_state("s1")
        rs.dispatch()
        print(seen)
        """,
        timeout=600,
        valgrind=True,
    )
    assert engine_reports(run.err) == []
    assert (run.code, run.lines) == (0, ["[('single', 's2', 0)]"]), run.err
