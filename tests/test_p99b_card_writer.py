"""The cards shown are written by one writer task (``redflags.service.cds.card_writer``): a call
returns once its cards are in the feedback database (a killed process loses none it answered),
calls queued while a write runs are written together in one hop, a failed write costs only its
own call's statistics, and a card recorded after the close is written at once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path

from redflags.service.cds.card_writer import CardWriter
from redflags.state.feedback import FeedbackStoreError, ShownCard, SqliteFeedbackStore

SHOWN_AT = 1_765_000_000
GBS = "guillain_barre_syndrome"


class _Held(SqliteFeedbackStore):
    """A store whose first write waits for ``gate`` (the writer busy while more calls queue),
    and which fails the writes of the services named in ``failing``."""

    gate: threading.Event
    entered: threading.Event
    failing: frozenset[str] = frozenset()
    threads: set[int]

    def record_cards(
        self, service_id: str, cards: Iterable[ShownCard], shown_at: int, *, site: str | None = None
    ) -> None:
        self.threads.add(threading.get_ident())
        self.entered.set()
        self.gate.wait(30)
        if service_id in self.failing:
            raise FeedbackStoreError("the disk is full")
        super().record_cards(service_id, cards, shown_at, site=site)


def _store(tmp_path: Path, failing: frozenset[str] = frozenset()) -> _Held:
    store = _Held.open(tmp_path / "feedback.sqlite")
    store.gate, store.entered, store.failing, store.threads = (
        threading.Event(),
        threading.Event(),
        failing,
        set(),
    )
    return store


def _card(n: int) -> list[ShownCard]:
    return [ShownCard(f"card-{n}", GBS, "A", "critical")]


def _shown(store: SqliteFeedbackStore) -> int:
    return sum(rule.shown for rule in store.report().rules)


def test_calls_wait_for_their_cards_and_those_queued_meanwhile_are_written_in_one_hop(tmp_path: Path) -> None:
    store = _store(tmp_path)

    async def calls() -> None:
        writer = CardWriter(store)
        writer.start()
        pending = [
            asyncio.create_task(writer.record("redflags-patient-view", _card(n), SHOWN_AT)) for n in range(50)
        ]
        await asyncio.to_thread(store.entered.wait, 30)  # the first write is under way, held
        assert not any(call.done() for call in pending)  # no call answered before its cards are written
        store.gate.set()
        await asyncio.gather(*pending)
        assert _shown(store) == 50  # every call that returned has its cards in the database
        await writer.close()

    asyncio.run(calls())
    assert len(store.threads) <= 2  # one hop per batch, not a thread per call
    store.close()


def test_a_call_returns_with_its_cards_already_written(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.gate.set()

    async def calls() -> None:
        writer = CardWriter(store)
        writer.start()
        for n in range(3):
            await writer.record("redflags-patient-view", _card(n), SHOWN_AT)
            assert _shown(store) == n + 1  # written before the answer could leave
        await writer.close()

    asyncio.run(calls())
    store.close()


def test_a_failed_write_costs_only_its_own_cards(tmp_path: Path) -> None:
    store = _store(tmp_path, failing=frozenset({"broken"}))
    store.gate.set()

    async def calls() -> None:
        writer = CardWriter(store)
        writer.start()
        await writer.record("broken", _card(1), SHOWN_AT)
        await writer.record("redflags-patient-view", _card(2), SHOWN_AT)
        await writer.close()

    asyncio.run(calls())
    assert [(r.rule, r.shown) for r in store.report().rules] == [(GBS, 1)]
    store.close()


def test_a_card_recorded_after_the_close_is_written_at_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.gate.set()

    async def calls() -> None:
        writer = CardWriter(store)
        writer.start()
        await writer.close()
        await writer.record("redflags-patient-view", _card(1), SHOWN_AT)
        assert _shown(store) == 1  # not left in a queue nobody drains

    asyncio.run(calls())
    store.close()


def test_a_served_call_s_cards_are_in_the_database_once_serve_stops(tmp_path: Path) -> None:
    """Every card answered is in the database after serve stops."""
    from .cds_helpers import NOW, call, vignette_request
    from .service_harness import running_service

    db = tmp_path / "feedback.sqlite"
    uuids: list[str] = []
    args = ("--allow-unauthenticated", "--now", NOW, "--feedback-db", str(db))
    with running_service(tmp_path, *args) as service:
        for _ in range(5):
            answer = call(service, "redflags-patient-view", vignette_request("V01-ces-positive"))
            assert answer.status_code == 200, answer.text
            uuids += [card["uuid"] for card in answer.json()["cards"]]
    assert uuids
    store = SqliteFeedbackStore.open(db, create=False)
    try:
        assert _shown(store) == len(uuids)
    finally:
        store.close()
