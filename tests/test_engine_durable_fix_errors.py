"""durable-rules' errors reach the caller (engine/durable_patches/0009).

Upstream caught an exception raised in a rule action and stored it in the session's
``exception`` entry (the caller saw success), a chained assert that no rule handled failed the
same silent way, and the public batch assert raised "not handled" as soon as one fact of the
batch matched no rule, before running the actions of the others (docs/engine.md#batch-assert).
Each test runs durable's public Host API directly in its own interpreter.
"""

from __future__ import annotations

from .durable_fix_helpers import run_durable

RULES = """
from durable.engine import MessageNotHandledException, MessageObservedException
seen = []
def define():
    @when_all(m.t == "boom")
    def boom(c):
        raise ValueError("the rule failed")
    @when_all(m.t == "chain")
    def chain(c):
        c.assert_fact({"t": "nobody reads this", "n": 0})
    @when_all(m.t == "o")
    def single(c):
        seen.append(c.m.n)
rs = compile_ruleset("rs", define)

def attempt(call):
    try:
        call()
        return "returned"
    except (ValueError, MessageNotHandledException, MessageObservedException) as error:
        return type(error).__name__
"""


def test_an_exception_in_a_rule_action_is_raised_to_the_caller() -> None:
    run = run_durable(
        RULES,
        """
        print(attempt(lambda: HOST.assert_fact("rs", {"sid": "s1", "t": "boom"})))
        print(attempt(lambda: HOST.assert_facts("rs", [{"sid": "s2", "t": "boom"}])))
        """,
    )
    assert (run.code, run.lines) == (0, ["ValueError", "ValueError"]), run.err


def test_a_chained_assert_no_rule_handles_is_raised_to_the_caller() -> None:
    run = run_durable(RULES, 'print(attempt(lambda: HOST.assert_fact("rs", {"sid": "s", "t": "chain"})))')
    assert (run.code, run.lines) == (0, ["MessageNotHandledException"]), run.err


def test_a_batch_with_a_fact_no_rule_reads_runs_every_other_action() -> None:
    run = run_durable(
        RULES,
        """
        batch = [{"sid": "s", "t": "o", "n": i} for i in range(5)] + [{"sid": "s", "t": "unread"}]
        print(attempt(lambda: HOST.assert_facts("rs", batch)), sorted(seen))
        """,
    )
    assert (run.code, run.lines) == (0, ["returned [0, 1, 2, 3, 4]"]), run.err


def test_a_batch_with_a_repeated_fact_runs_the_others_then_raises() -> None:
    run = run_durable(
        RULES,
        """
        batch = [{"sid": "s", "id": 1, "t": "o", "n": 1}, {"sid": "s", "id": 1, "t": "o", "n": 1},
                 {"sid": "s", "id": 2, "t": "o", "n": 2}]
        print(attempt(lambda: HOST.assert_facts("rs", batch)), sorted(seen))
        """,
    )
    assert (run.code, run.lines) == (0, ["MessageObservedException [1, 2]"]), run.err


def test_a_single_fact_no_rule_reads_is_still_reported() -> None:
    """Unchanged on purpose: one fact that nothing reads is the caller's to know about."""
    run = run_durable(RULES, 'print(attempt(lambda: HOST.assert_fact("rs", {"sid": "s", "t": "unread"})))')
    assert (run.code, run.lines) == (0, ["MessageNotHandledException"]), run.err
