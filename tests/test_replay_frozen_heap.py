"""A replay freezes the heap it starts with and unfreezes it after, unless its caller had frozen
a heap of its own (a service process freezes its start-up heap): that one stays frozen."""

from __future__ import annotations

import gc

from redflags.replay.partition import _frozen_heap


def test_a_replay_in_a_process_with_nothing_frozen_leaves_nothing_frozen() -> None:
    gc.unfreeze()
    with _frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_a_heap_the_caller_froze_stays_frozen() -> None:
    gc.freeze()
    try:
        before = gc.get_freeze_count()
        assert before > 0
        with _frozen_heap():
            pass
        assert gc.get_freeze_count() >= before
    finally:
        gc.unfreeze()
