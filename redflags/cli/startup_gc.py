"""No cyclic garbage collection over what a command builds to start, nor at its exit.

Start-up builds only objects that live as long as the process (modules, classes, the compiled
rule program, the terminology): the collector finds no garbage among them, yet a one-file
``redflags replay`` ran some 40 collections while starting (a few ms of its ~0.18 s CPU), and
the collections of interpreter shutdown, which traverse every one of those objects again,
cost it ~25 ms more.

The collector is paused for the start-up phases and restored to what it was after, so a long
replay collects as before; and it is frozen at exit (``gc.freeze``: no more cyclic collection;
reference counting still frees what the modules' teardown releases). Nothing of ours relies
on the collector at exit: every file, store and temporary folder is closed or removed by a
``with`` or ``finally`` before the command returns.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_exit_hook: list[bool] = []  # registered once per process


@contextmanager
def collection_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block; afterwards it is as it was (on or off)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def no_collection_at_exit() -> None:
    """At interpreter exit, skip the cyclic collections over every live object (``gc.freeze``).

    An atexit hook: a process that runs the command in-process (a test's CliRunner) is changed
    only when it exits, never while it runs.
    """
    if not _exit_hook:
        atexit.register(gc.freeze)
        _exit_hook.append(True)
