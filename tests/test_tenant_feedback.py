"""Feedback by tenant: a client's feedback counts only for cards shown to that client.

Card uuids derive from the hookInstance, which any client chooses: on 30fb331 a second client
could send feedback on the first client's cards and change that client's alert-fatigue figures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from redflags.state.feedback import Feedback, ShownCard, SqliteFeedbackStore

from .conftest import FIXTURES

SERVICE = "redflags-patient-view"
A, B = "https://ehr-a.example.org/", "https://ehr-b.example.org/"


def test_feedback_from_another_client_is_not_counted_for_a_card(tmp_path: Path) -> None:
    store = SqliteFeedbackStore.open(tmp_path / "feedback.sqlite")
    try:
        store.record_cards(SERVICE, [ShownCard("card-1", "cauda_equina_syndrome", "A", "critical", A)], 100)
        store.record_feedback(SERVICE, [Feedback("card-1", "overridden", "2025-03-10T12:01:00Z")], B, 101)
        report = store.report()
        (rule,) = report.rules
        assert (rule.shown, rule.overridden, rule.feedback_items) == (1, 0, 0)
        assert report.unknown_cards.feedback_items == 1  # kept, but not as A's
        store.record_feedback(SERVICE, [Feedback("card-1", "accepted", "2025-03-10T12:02:00Z")], A, 102)
        (rule,) = store.report().rules
        assert (rule.accepted, rule.overridden, rule.feedback_items) == (1, 0, 1)
    finally:
        store.close()


def test_a_feedback_database_written_before_clients_opens_and_keeps_its_figures(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    shutil.copy(FIXTURES / "state" / "feedback-v1-30fb331.sqlite", path)
    store = SqliteFeedbackStore.open(path, create=False)  # as `redflags feedback report` opens it
    try:
        (rule,) = store.report().rules
        assert (rule.rule, rule.shown, rule.accepted) == ("cauda_equina_syndrome", 1, 1)
        store.record_feedback(SERVICE, [Feedback("card-old", "overridden", "2025-03-10T12:05:00Z")], B, 200)
        (rule,) = store.report().rules  # a card of before clients: anyone's feedback counts
        assert rule.overridden == 1
    finally:
        store.close()
