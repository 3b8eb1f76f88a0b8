"""The FeedbackStore keeps each site's cards and feedback apart, on SQLite and PostgreSQL alike:
a card counts for the site that showed it, feedback sent to another site for it is that site's
unknown card, two sites may show the same card uuid, and the default site's rows keep their shape.
"""

from __future__ import annotations

from redflags.service.cds.services import SERVICES
from redflags.state.model import FeedbackStore, ShownCard, UnknownCards

from . import test_store_contract_feedback as contract
from .test_store_contract_feedback import REASON, SHOWN_AT, said

feedback = contract.feedback  # the contract suite's store fixture: SQLite and PostgreSQL

#: The fields of a report row of the default site (a prefixed site's row adds "site").
ROW_FIELDS = (
    "rule",
    "shown",
    "accepted",
    "overridden",
    "no_feedback",
    "feedback_items",
    "overridden_without_reason",
    "override_reasons",
)


def _scenario(store: FeedbackStore) -> None:
    gbs = ShownCard("u1", "gbs", "A", "critical", client="ehr")
    store.record_cards("svc", [gbs, ShownCard("u2", "cauda", "urgent", "warning", "ehr")], SHOWN_AT, site="a")
    store.record_cards("svc", [gbs], SHOWN_AT, site="b")  # the same uuid (same hookInstance) at b
    store.record_cards("svc", [gbs], SHOWN_AT)  # and at the default site
    store.record_feedback("svc", [said("u1", "accepted")], "ehr", SHOWN_AT, site="a")
    store.record_feedback("svc", [said("u2", "overridden", REASON)], "ehr", SHOWN_AT, site="b")  # a's card
    store.record_feedback("svc", [said("u1", "overridden", REASON)], "ehr", SHOWN_AT, site="b")
    store.record_feedback("svc", [said("u1", "accepted")], "ehr", SHOWN_AT)
    store.record_feedback("svc", [said("a/u2", "accepted")], "ehr", SHOWN_AT)  # a's key, sent unprefixed


def test_each_site_counts_only_its_own_cards(feedback: FeedbackStore) -> None:
    _scenario(feedback)
    report = feedback.report()
    rows = [(r.site, r.rule, r.shown, r.accepted, r.overridden, r.no_feedback) for r in report.rules]
    assert rows == [
        ("", "gbs", 1, 1, 0, 0),
        ("a", "cauda", 1, 0, 0, 1),  # b's override of u2 is not a's
        ("a", "gbs", 1, 1, 0, 0),
        ("b", "gbs", 1, 0, 1, 0),  # b's own card with the same uuid
    ]
    (b_gbs,) = [r for r in report.rules if r.site == "b"]
    assert [(x.code, x.cards) for x in b_gbs.override_reasons] == [("not-relevant", 1)]
    assert report.unknown_by_site == (("", UnknownCards(1, 1, 1, 0)), ("b", UnknownCards(1, 1, 0, 1)))
    assert report.unknown_cards == UnknownCards(2, 2, 1, 1)
    assert report.sites == ("", "a", "b")


def test_one_site_s_report(feedback: FeedbackStore) -> None:
    _scenario(feedback)
    only_b = feedback.report().for_site("b").as_dict()
    assert [(r["site"], r["rule"], r["overridden"]) for r in only_b["rules"]] == [("b", "gbs", 1)]
    assert only_b["unknown_cards"] == {"feedback_items": 1, "cards": 1, "accepted": 0, "overridden": 1}
    default = feedback.report().for_site("").as_dict()
    assert [("site" in r, r["rule"], r["accepted"]) for r in default["rules"]] == [(False, "gbs", 1)]
    assert "unknown_cards_by_site" not in default
    assert feedback.report().for_site("nowhere").rules == ()


def test_a_default_site_database_reports_as_before(feedback: FeedbackStore) -> None:
    """No site: the keys stored and the report's JSON are those of the release before sites."""
    feedback.record_cards("svc", [ShownCard("u1", "gbs", "A", "critical")], SHOWN_AT)
    feedback.record_feedback("svc", [said("u1", "accepted"), said("x", "accepted")], "", SHOWN_AT)
    doc = feedback.report().as_dict()
    assert set(doc) == {"rules", "unknown_cards"}
    assert [sorted(r) for r in doc["rules"]] == [sorted(ROW_FIELDS)]
    assert doc["unknown_cards"] == {"feedback_items": 1, "cards": 1, "accepted": 1, "overridden": 0}


def test_every_service_id_is_made_of_the_characters_the_report_strips() -> None:
    """The report reads a row's site with rtrim(service, SERVICE_ID_CHARS): a service id must
    hold only those characters, or part of it would be read as a site."""
    from redflags.state.feedback_sql import SERVICE_ID_CHARS, site_key  # (here: the other tests run on main)

    assert all(set(service_id) <= set(SERVICE_ID_CHARS) for service_id in SERVICES)
    assert "/" not in SERVICE_ID_CHARS
    assert site_key(None, "redflags-patient-view") == "redflags-patient-view"
    assert site_key("a", "redflags-patient-view") == "a/redflags-patient-view"
