"""CDS feedback split by site: one real ``serve --site a=... --site b=...`` (and ``--config`` for
the unprefixed, default site), cards shown and feedback sent over real HTTP, counted by
``redflags feedback report`` per site.

A card shown at site a counts under a only; feedback for it sent to site b is answered as any
unknown card is (200, kept) and counted as b's unknown card; the default site's report keeps
today's shape (no ``site`` key).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from .cds_helpers import PATIENT_VIEW, prefetch_for, request, resources_of
from .cli_helpers import run
from .conftest import FIXTURES
from .service_harness import Service, running_service
from .test_fbsite_store import ROW_FIELDS

NOW = "2025-03-10T12:00:00Z"
#: Post-void residual 420 mL: a critical cauda equina card with the default thresholds.
PVR = FIXTURES / "cauda_equina_syndrome" / "tierA-pvr-420mL-leg-numbness.json"
RULE = "cauda_equina_syndrome"


@dataclass
class Served:
    service: Service
    db: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fbsite")
    plain = tmp / "plain.toml"
    plain.write_text("# every default\n", encoding="utf-8")
    db = tmp / "feedback.sqlite"
    args = ("--allow-unauthenticated", "--now", NOW, "--no-state", "--feedback-db", str(db))
    sites = ("--site", f"a={plain}", "--site", f"b={plain}", "--config", str(plain))
    with running_service(tmp, *args, *sites) as service:
        yield Served(service, db)


def _base(service: Service, site: str | None) -> str:
    return f"{service.url}/sites/{site}" if site else service.url


def _show(service: Service, site: str | None, hook_instance: str | None = None) -> str:
    """Call patient-view at SITE (None: unprefixed); the one card's uuid."""
    resources = resources_of(PVR)
    body = request("patient-view", "ces-a-pvr-ml", prefetch_for(resources))
    if hook_instance:
        body["hookInstance"] = hook_instance
    answer = requests.post(f"{_base(service, site)}/cds-services/{PATIENT_VIEW}", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    (card,) = answer.json()["cards"]
    return card["uuid"]


def _feedback(service: Service, site: str | None, card: str, outcome: str) -> requests.Response:
    item: dict[str, Any] = {"card": card, "outcome": outcome, "outcomeTimestamp": "2025-12-06T10:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "create-flag-and-careplan"}]
    url = f"{_base(service, site)}/cds-services/{PATIENT_VIEW}/feedback"
    return requests.post(url, json={"feedback": [item]}, timeout=30)


def _report(db: Path, *more: str) -> dict[str, Any]:
    done = run("feedback", "report", "--db", db, "--format", "json", *more)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _row(report: dict[str, Any], site: str | None) -> dict[str, Any]:
    (row,) = [r for r in report["rules"] if r.get("site") == site]
    return row


def test_a_card_shown_at_site_a_counts_under_a_only_and_b_refuses_its_feedback(served: Served) -> None:
    card = _show(served.service, "a")
    elsewhere = _feedback(served.service, "b", card, "overridden")
    assert elsewhere.status_code == 200 and elsewhere.content == b""  # as any unknown card: kept
    assert _feedback(served.service, "a", card, "accepted").status_code == 200
    everything = _report(served.db)
    assert [(r["rule"], r["overridden"]) for r in everything["rules"]] == [(RULE, 0)]  # b's is not a's
    assert everything["unknown_cards"]["overridden"] == 1  # it is b's unknown card
    report = _report(served.db, "--site", "a")
    assert report["rules"] == [
        {
            "rule": RULE,
            "shown": 1,
            "accepted": 1,
            "overridden": 0,  # site b's "overridden" is not a's
            "no_feedback": 0,
            "feedback_items": 1,
            "overridden_without_reason": 0,
            "override_reasons": [],
            "site": "a",
        }
    ]
    assert report["unknown_cards"]["feedback_items"] == 0
    b = _report(served.db, "--site", "b")
    assert [r for r in b["rules"] if r["shown"] != r["no_feedback"]] == []  # nothing of a's counted at b
    assert b["unknown_cards"] == {"feedback_items": 1, "cards": 1, "accepted": 0, "overridden": 1}


def test_the_same_hook_instance_at_two_sites_is_two_cards(served: Served) -> None:
    """A card uuid derives from the hookInstance: both sites' cards are kept, each with its feedback."""
    instance = "5b3f8c0e-2d3a-4c1e-9f53-8a1b2c3d4e5f"
    card_a, card_b = _show(served.service, "a", instance), _show(served.service, "b", instance)
    assert card_a == card_b
    before = {site: _row(_report(served.db), site)["shown"] for site in ("a", "b")}
    assert _feedback(served.service, "b", card_b, "overridden").status_code == 200
    after = _report(served.db)
    assert (_row(after, "b")["shown"], _row(after, "b")["overridden"]) == (1, 1)
    assert _row(after, "a")["overridden"] == 0
    assert {site: _row(after, site)["shown"] for site in ("a", "b")} == before


def test_the_default_site_s_report_keeps_its_shape_and_counts(served: Served) -> None:
    card, at_a = _show(served.service, None), _show(served.service, "a")
    assert _feedback(served.service, None, card, "accepted").status_code == 200
    unprefixed = _feedback(served.service, None, f"a/{at_a}", "accepted")  # naming a's stored key
    assert unprefixed.status_code == 200
    row = _row(_report(served.db), None)  # no "site" key: as before sites
    assert set(row) == set(ROW_FIELDS)
    assert (row["rule"], row["shown"], row["accepted"], row["feedback_items"]) == (RULE, 1, 1, 1)
    default = _report(served.db, "--site", "")
    assert [r.get("site") for r in default["rules"]] == [None]
    assert default["unknown_cards"]["feedback_items"] == 1  # "a/<uuid>" sent unprefixed is not a's


def test_the_table_has_a_row_per_site(served: Served) -> None:
    _show(served.service, "a")
    done = run("feedback", "report", "--db", served.db)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if RULE in line]
    assert {line.split("│")[1].strip() for line in lines} >= {"a", "(default)"}


def test_a_bad_site_name_is_one_line_and_an_unseen_site_says_so(served: Served) -> None:
    bad = run("feedback", "report", "--db", served.db, "--site", "no/such")
    assert bad.returncode == 2 and "--site" in bad.stderr and "Traceback" not in bad.stderr
    unseen = run("feedback", "report", "--db", served.db, "--site", "zzz", "--format", "json")
    assert unseen.returncode == 0 and "no feedback recorded for site 'zzz'" in unseen.stderr
    assert json.loads(unseen.stdout)["rules"] == []
