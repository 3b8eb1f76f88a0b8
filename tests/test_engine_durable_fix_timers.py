"""durable-rules' dispatch and timer threads, made safe (engine/durable_patches/0007, 0010).

Each durable Host starts two threads that re-arm every 0.2 s and walk the ruleset's live
sessions. Upstream they read freed memory: deleting a session that was not the newest left it
in that list (0007), and an action a thread had started kept its session's offset, which
complete/abandon/start-for-state then used after the session was deleted (0010: they now
refuse a deleted session). The threads are used here as durable starts them; redflags itself
still never starts them (docs/engine.md#timer-threads) until issue 15 item 4.
"""

from __future__ import annotations

from .durable_fix_helpers import run_durable

RULE = """
seen = []
def define():
    @when_all(m.t == "o")
    def single(c):
        seen.append(c.m.sid)
"""


def test_an_action_held_across_its_sessions_deletion_is_refused_not_read_after_free() -> None:
    run = run_durable(
        RULE,
        """
        rs = compile_ruleset("rs", define)
        facts = [{"sid": "s", "id": i, "t": "o"} for i in range(3)]
        code, offset = dre.assert_facts(rs._handle, json.dumps(facts))
        dre.start_action_for_state(rs._handle, offset)  # what a dispatcher thread does
        rs.delete_state("s")  # meanwhile the caller deletes the session
        calls = [dre.complete_and_start_action, dre.abandon_action, dre.start_action_for_state]
        outcomes = []
        for call in calls:
            try:
                call(rs._handle, offset)
                outcomes.append("accepted")
            except dre.error as error:
                outcomes.append(str(error).rsplit(" ", 1)[-1])
        print(outcomes)
        """,
    )
    # 309: durable's "session not found"
    assert (run.code, run.lines) == (0, ["['309', '309', '309']"]), run.err


def test_durable_own_threads_run_while_older_sessions_are_deleted() -> None:
    # Upstream: a segmentation fault within the threads' first rounds (every run here).
    run = run_durable(
        RULE,
        """
        import threading
        host = de.Host()  # durable's own host: its dispatch and timer threads run throughout
        with dl.ruleset("rs"):
            define()
        name, body = dl._rulesets.pop("rs").define()
        host.register_rulesets({name: body})
        lock, live = threading.Lock(), {}
        def work(w):
            for k in range(2000):
                with lock:  # one engine call at a time, as redflags' engine thread does
                    host.assert_fact("rs", {"sid": f"w{w}-{k}", "id": 1, "t": "o"})
                    live.setdefault(w, []).append(f"w{w}-{k}")
                    if len(live[w]) > 4:  # the oldest, while newer ones are live
                        host.delete_state("rs", live[w].pop(0))
        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(len(seen), len(set(seen)))
        """,
    )
    assert (run.code, run.lines) == (0, ["16000 16000"]), run.err
