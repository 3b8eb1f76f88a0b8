"""Facts of resources mapped before, found again by their content: a repeated call maps what changed.

A CDS client sends a patient's whole prefetch with every call, and most of it (weeks of vitals and
labs) is the same as in the last call: mapping it again was about half of an engine process's
work on the call. An entry is found by the resource's patient, reference, path and its JSON,
compared in full (no digest that two resources could share), so any change to the resource, or
the same resource under another patient or path, maps it afresh. Only resources whose facts
depend on nothing but themselves are kept (``facts.SELF_CONTAINED``); a hit returns copies, so a
caller may change what it gets.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from fhir_adapters.errors import IntakeError
from fhir_adapters.intake import Issue

Fact = dict[str, object]
#: what mapping one resource gave: its facts and issues, or the error that stopped it
_Outcome = tuple[list[Fact], list[Issue], IntakeError | None]
#: entries kept (least recently used dropped first): about a hundred 200-resource patients,
#: ~2 KiB each (the resource's JSON and its facts)
DEFAULT_SIZE = 20_000


class FactsCache:
    """A bounded map from (patient, reference, path, resource JSON) to that resource's facts."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self._kept: OrderedDict[tuple[str, str, str, bytes], _Outcome] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        """Forget every resource (a benchmark's cold call)."""
        self._kept.clear()

    def facts(
        self,
        res: dict[str, Any],
        pid: str,
        ref: str,
        path: str,
        issues: list[Issue],
        map_: Callable[[list[Issue]], list[Fact]],
        text: bytes | None = None,
    ) -> list[Fact]:
        """The facts of ``res`` (``map_`` called only when unseen), its issues appended to ``issues``.

        ``text``: the JSON ``res`` was decoded from, when the caller kept it (``Entry.text``); it is
        the key as it is, else ``res`` is encoded for one. Either way the key is the resource's
        whole content: equal texts decode to equal resources.
        """
        key = (pid, ref, path, orjson.dumps(res) if text is None else text)
        kept = self._kept
        found = kept.get(key)
        if found is None:
            self.misses += 1
            raised: IntakeError | None = None
            own: list[Issue] = []
            try:
                mapped = map_(own)
            except IntakeError as exc:
                mapped, raised = [], exc
            # copies: the caller owns these (``map(dict.copy)``: no comprehension frame per resource)
            kept[key] = ([*map(dict.copy, mapped)] if mapped else mapped, own, raised)
            if len(kept) > self.size:
                kept.popitem(last=False)
        else:
            self.hits += 1
            kept.move_to_end(key)
            facts, own, raised = found
            mapped = [*map(dict.copy, facts)] if facts else []
        if own:
            issues.extend(own)
        if raised is not None:
            raise raised
        return mapped
