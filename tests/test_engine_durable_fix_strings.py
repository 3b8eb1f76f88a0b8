"""durable-rules compares long strings in full (engine/durable_patches/0011).

Upstream compared two strings on their lengths modulo 65,536 (an unsigned short), so two
different strings of 65,537 characters were compared on their first character only and found
equal. Runs durable directly in its own interpreter (tests/durable_fix_helpers.py).
"""

from __future__ import annotations

from .durable_fix_helpers import run_durable


def test_strings_longer_than_65535_characters_are_compared_in_full() -> None:
    run = run_durable(
        """
        seen = []
        def define():
            @when_all(c.a << (m.t == "a"), c.b << ((m.t == "b") & (m.s != c.a.s)))
            def differs(c):
                seen.append(("differs", c.a.sid))
            @when_all(c.a << (m.t == "a"), c.b << ((m.t == "b") & (m.s < c.a.s)))
            def before(c):
                seen.append(("before", c.a.sid))
        rs = compile_ruleset("rs", define)
        base = "a" * 65536
        for sid, x, y in [("long", base + "c", base + "b"), ("short", "ac", "ab")]:
            pair = [{"sid": sid, "id": 1, "t": "a", "s": x}, {"sid": sid, "id": 2, "t": "b", "s": y}]
            assert_batch(rs, pair)
        print(sorted(seen))
        """
    )
    expected = "[('before', 'long'), ('before', 'short'), ('differs', 'long'), ('differs', 'short')]"
    assert (run.code, run.lines) == (0, [expected]), run.err
