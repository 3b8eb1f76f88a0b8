"""The FeedbackStore and JtiStore contracts, run against SQLite and PostgreSQL alike: one
scenario of cards and feedback gives one report on both; jti ids are refused while live."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from redflags.state.model import Feedback, FeedbackStore, JtiStore, Reason, ShownCard
from redflags.state.stores import open_feedback, open_jti

from .test_store_contract_state import KINDS, location

SHOWN_AT = 1_765_000_000
REASON = Reason("http://example.org/reasons", "not-relevant", "Not relevant")


@pytest.fixture(params=KINDS)
def feedback(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedbackStore]:
    where = location(request.param, request, tmp_path)
    store = open_feedback(tmp_path / "feedback.db" if isinstance(where, Path) else where)
    yield store
    store.close()


@pytest.fixture(params=KINDS)
def jti(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JtiStore]:
    where = location(request.param, request, tmp_path)
    store = open_jti(tmp_path / "jti.db" if isinstance(where, Path) else where)
    yield store
    store.close()  # type: ignore[attr-defined]


def said(card: str, outcome: str, reason: Reason | None = None, comment: str | None = None) -> Feedback:
    return Feedback(
        card, outcome, "2025-12-06T10:00:00Z", ("s1",) if outcome == "accepted" else (), reason, comment
    )  # type: ignore[arg-type]


def test_one_scenario_gives_one_report(feedback: FeedbackStore) -> None:
    feedback.record_cards(
        "svc",
        [
            ShownCard("c1", "gbs", "A", "critical", client="ehr-a"),
            ShownCard("c2", "gbs", "A", "critical", client="ehr-a"),
            ShownCard("c3", "gbs", "A", "critical"),
            ShownCard("c4", "cauda", "urgent", "warning", client="ehr-a"),
        ],
        SHOWN_AT,
    )
    feedback.record_cards("svc", [ShownCard("c1", "other", "B", "info")], SHOWN_AT)  # first row kept
    feedback.record_feedback(
        "svc", [said("c1", "accepted"), said("c1", "overridden", REASON)], "ehr-a", SHOWN_AT
    )
    feedback.record_feedback("svc", [said("c2", "overridden", comment="free text")], "ehr-a", SHOWN_AT)
    feedback.record_feedback("svc", [said("c4", "overridden", REASON)], "ehr-b", SHOWN_AT)  # not its card
    feedback.record_feedback("svc", [said("c9", "accepted"), said("c9", "overridden")], "ehr-a", SHOWN_AT)
    report = feedback.report().as_dict()
    assert report == {
        "rules": [
            {
                "rule": "cauda",
                "shown": 1,
                "accepted": 0,
                "overridden": 0,
                "no_feedback": 1,
                "feedback_items": 0,
                "overridden_without_reason": 0,
                "override_reasons": (),
            },
            {
                "rule": "gbs",
                "shown": 3,
                "accepted": 1,
                "overridden": 2,
                "no_feedback": 1,
                "feedback_items": 3,
                "overridden_without_reason": 1,
                "override_reasons": (
                    {"system": REASON.system, "code": REASON.code, "display": REASON.display, "cards": 1},
                ),
            },
        ],
        "unknown_cards": {"feedback_items": 3, "cards": 2, "accepted": 1, "overridden": 2},
    }


def test_retention_drops_old_cards_with_their_feedback(feedback: FeedbackStore) -> None:
    feedback.record_cards("svc", [ShownCard("old", "gbs", "A", "critical")], SHOWN_AT)
    feedback.record_feedback("svc", [said("old", "accepted")], "", SHOWN_AT)
    feedback.record_cards("svc", [ShownCard("new", "gbs", "A", "critical")], SHOWN_AT + 200 * 86_400)
    (rule,) = feedback.report().rules
    assert (rule.shown, rule.feedback_items) == (1, 0)  # kept 180 days by default


def test_a_jti_is_refused_while_it_lives(jti: JtiStore) -> None:
    assert jti.first_use("iss", "a", 4e9) is True
    assert jti.first_use("iss", "a", 4e9) is False
    assert jti.first_use("other-iss", "a", 4e9) is True  # ids are per issuer
    assert jti.first_use("iss", "gone", 1.0) is True
    assert jti.first_use("iss", "gone", 4e9) is True  # expired: taken over
