"""A patient none of whose facts a derivation reads is evaluated without a durable-rules
session (nothing asserted, nothing to delete); the Python-checked rules still see every fact,
and sessions that are opened still open with the session fact and are deleted after."""

from __future__ import annotations

from .test_engine import isolated

SPY = """
import durable_rules_engine
import engine.session as es
calls = []
real_assert = es.dre.assert_facts
def spy_assert(handle, text):
    calls.append(("assert", [f["t"] for f in __import__("json").loads(text)]))
    return real_assert(handle, text)
es.dre = types.SimpleNamespace(assert_facts=spy_assert)
def define(r, _p):
    r.derive("ces_pair", present("back_pain"), present("saddle_anesthesia"))
    r.fire("A", present("saddle_anesthesia"))  # checked after the session: no derivation needed
engine = Engine([module(define)])
real_delete = engine._ruleset.delete_state
def spy_delete(sid):
    calls.append(("delete", sid))
    return real_delete(sid)
engine._ruleset.delete_state = spy_delete
def run(pid, facts):
    calls.clear()
    done = engine.evaluate(pid, facts, NOW)
    tiers = [a.tier for a in done.alerts]
    print(tiers, done.derived, [c[0] for c in calls], [c[1] for c in calls if c[0] == "assert"])
"""


def test_a_patient_no_derivation_reads_opens_no_durable_session() -> None:
    out = isolated(
        SPY
        + """
run("Patient/1", [{"t": "patient", "pid": "Patient/1", "ref": "Patient/1", "birth": "1970-01-01"}])
run("Patient/2", ces_back("Patient/2") + ces_saddle("Patient/2"))
run("Patient/3", [])
run("Patient/4", ces_saddle("Patient/4"))  # only the derivation's second half: session opened
run("Patient/5", [{"t": "patient", "pid": "Patient/5", "ref": "Patient/5", "birth": "1970-01-01"}])
run("Patient/6", ces_back("Patient/6") + ces_saddle("Patient/6"))
"""
    )
    assert out.splitlines() == [
        "[] 0 [] []",
        "['A'] 1 ['assert', 'delete'] [['session', 'finding', 'finding']]",
        "[] 0 [] []",
        "['A'] 0 ['assert', 'delete'] [['session', 'finding']]",
        "[] 0 [] []",
        "['A'] 1 ['assert', 'delete'] [['session', 'finding', 'finding']]",
    ]
