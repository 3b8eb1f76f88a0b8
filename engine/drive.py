"""Run the actions durable-rules matched in one session: a lean loop over its C calls.

durable's own driver (``durable.engine.Ruleset.do_actions``) wraps every action in a Closure, a
Promise and a callback, decodes the session state and encodes it again after each action: in a
replay that was about a third of the engine's Python time. The rule actions of ``engine.session``
read only the matched facts and never change the session state, so this loop hands each action
its facts as decoded and returns the state to durable as durable gave it (docs/engine.md#the-safe-way:
the calls and their order are those of durable's driver: start, run, update state, complete).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import durable_rules_engine as dre
import orjson

#: an action gets ``{alias: fact}`` (``{"m": fact}`` for a rule on one unnamed fact)
Action = Callable[[dict[str, Any]], None]


def actions_of(ruleset: Any) -> dict[str, Action]:
    """Each durable rule name's action function, as registered (a durable Ruleset's Promises)."""
    return {name: promise._func for name, promise in ruleset._actions.items()}


def run_actions(handle: int, state_handle: int, actions: Mapping[str, Action]) -> None:
    """Run every action of the session ``state_handle`` to its fixed point, in durable's order.

    An action that raises is abandoned in durable (as its driver does) and the error raised here.
    """
    started = dre.start_action_for_state(handle, state_handle)
    if not started:
        return
    state, message = started[0], started[1]
    while message:
        try:
            name, facts = next(iter(orjson.loads(message).items()))  # one rule per message
            actions[name](facts)
            dre.update_state(handle, state)
            message = dre.complete_and_start_action(handle, state_handle)
        except BaseException:
            dre.abandon_action(handle, state_handle)
            raise
