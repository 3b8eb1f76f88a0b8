"""CDS Hooks feedback over real HTTP: validated, stored durably, reported per rule by the real CLI.

Cards come from another part of the service; here the shown cards are seeded through the store
API (``record_cards``), exactly as the card producer records them.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
import requests

from redflags.service.cds.feedback import record_shown
from redflags.state.feedback import SCHEMA_VERSION, FeedbackStoreError, ShownCard, SqliteFeedbackStore

from .conftest import FIXTURES, ROOT
from .service_harness import Service, running_service

EXAMPLES = FIXTURES / "external" / "cds-hooks"
SPEC_FILES = (
    "feedback-accepted.spec-2.0.1.json",
    "feedback-overridden.spec-2.0.1.json",
    "feedback-overridden-with-reason.spec-2.0.1.json",
    "feedback.ahrq-cql-services.json",
)
CARD_ACCEPTED = "4e0a3a1e-3283-4575-ab82-028d55fe2719"  # accepted (spec) + accepted, overridden (AHRQ)
CARD_OVERRIDDEN = "f6b95768-b1c8-40dc-8385-bf3504b82ffb"  # overridden without reason
CARD_WITH_REASON = "9368d37b-283f-44a0-93ea-547cebab93ed"  # overridden with reason d7ecf885
SHOWN_AT = 1_765_000_000  # 2025-12-06


def post(
    service: Service, body: bytes | dict, service_id: str = "redflags-patient-view", **headers: str
) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        f"{service.url}/cds-services/{service_id}/feedback",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=30,
    )


def report(db: Path, fmt: str = "json") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redflags.cli", "feedback", "report", "--db", str(db), "--format", fmt],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def report_json(db: Path) -> dict[str, Any]:
    done = report(db)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def by_rule(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["rule"]: row for row in data["rules"]}


def stored(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM feedback ORDER BY id")]


def seed(db: Path, service_id: str, cards: list[ShownCard]) -> None:
    store = SqliteFeedbackStore.open(db)
    try:
        store.record_cards(service_id, cards, SHOWN_AT)
    finally:
        store.close()


def item(card: str, outcome: str, **extra: Any) -> dict[str, Any]:
    body = {"card": card, "outcome": outcome, "outcomeTimestamp": "2025-12-06T10:00:00Z", **extra}
    if outcome == "accepted" and "acceptedSuggestions" not in extra:
        body["acceptedSuggestions"] = [{"id": "create-flag-and-careplan"}]
    return body


def test_every_spec_example_is_accepted_stored_and_attributed(tmp_path: Path) -> None:
    db = tmp_path / "feedback.sqlite"
    seed(
        db,
        "redflags-patient-view",
        [
            ShownCard(CARD_ACCEPTED, "cauda_equina_syndrome", "critical", "critical"),
            ShownCard(CARD_WITH_REASON, "spinal_cord_compression", "urgent", "warning"),
        ],
    )  # CARD_OVERRIDDEN was never recorded: "unknown card"
    with running_service(tmp_path, "--allow-unauthenticated", "--feedback-db", str(db)) as service:
        for name in SPEC_FILES:
            answer = post(service, (EXAMPLES / name).read_bytes())
            assert (answer.status_code, answer.content) == (200, b""), (name, answer.text)
        offset = post(
            service,
            {
                "feedback": [
                    item(CARD_OVERRIDDEN, "overridden", outcomeTimestamp="2020-12-11T01:30:00.25+01:00")
                ]
            },
            "redflags-encounter-start",
        )
        assert offset.status_code == 200, offset.text
    rows = stored(db)
    assert [(r["service"], r["card"], r["outcome"], r["outcome_at"]) for r in rows] == [
        ("redflags-patient-view", CARD_ACCEPTED, "accepted", "2021-12-11T10:05:31Z"),
        ("redflags-patient-view", CARD_OVERRIDDEN, "overridden", "2020-12-11T00:00:00Z"),
        ("redflags-patient-view", CARD_WITH_REASON, "overridden", "2020-12-11T00:00:00Z"),
        ("redflags-patient-view", CARD_ACCEPTED, "accepted", "2021-12-11T10:05:31Z"),
        ("redflags-patient-view", CARD_ACCEPTED, "overridden", "2020-12-11T10:10:23Z"),
        ("redflags-encounter-start", CARD_OVERRIDDEN, "overridden", "2020-12-11T00:30:00.250000Z"),
    ]
    assert json.loads(rows[0]["accepted_suggestions"]) == ["e56e1945-20b3-4393-8503-a1a20fd73152"]
    reasoned = rows[2]
    assert (reasoned["reason_system"], reasoned["reason_code"], reasoned["user_comment"]) == (
        "https://example.com/cds-hooks/override-reason-system",
        "d7ecf885",
        "A comment entered by the clinician.",
    )
    assert rows[1]["reason_code"] is None and rows[1]["accepted_suggestions"] is None
    assert {r["client"] for r in rows} == {"unauthenticated"}

    data = report_json(db)
    rules = by_rule(data)
    assert rules["cauda_equina_syndrome"] == {
        "rule": "cauda_equina_syndrome",
        "shown": 1,
        "accepted": 1,
        "overridden": 1,  # the AHRQ example accepts and then overrides the same card
        "no_feedback": 0,
        "feedback_items": 3,
        "overridden_without_reason": 0,
        "override_reasons": [
            {
                "system": "https://example.com/cds-hooks/override-reason-system",
                "code": "d7ecf885",
                "display": None,
                "cards": 1,
            }
        ],
    }
    assert (rules["spinal_cord_compression"]["overridden"], rules["spinal_cord_compression"]["accepted"]) == (
        1,
        0,
    )
    assert data["unknown_cards"] == {"feedback_items": 2, "cards": 1, "accepted": 0, "overridden": 1}
    log = service.log()
    assert '"event": "feedback_stored"' in log
    assert "A comment entered by the clinician" not in log  # free text may name a patient


MALFORMED = [
    (b"{not json", "not valid JSON"),
    (b"[]", "body: expected a JSON object"),
    (b'{"cards": [1]}', "feedback: Field required"),
    (b'{"feedback": []}', "feedback is []"),
    (b'{"feedback": {"card": "c"}}', "feedback: Input should be a valid array"),
    (
        {"feedback": [item("c", "dismissed")]},
        "feedback[0].outcome: Input should be 'accepted' or 'overridden'",
    ),
    (
        {"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2025-12-06T10:00:00Z"}]},
        "feedback[0].card: Field required",
    ),
    ({"feedback": [item(42, "overridden")]}, "feedback[0].card: Input should be a valid string"),
    ({"feedback": [item("", "overridden")]}, 'feedback[0]: card is ""'),
    (
        {"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2025-12-06T10:00:00Z"}]},
        "acceptedSuggestions is required when outcome is 'accepted'",
    ),
    (
        {"feedback": [item("c", "accepted", acceptedSuggestions=[{"label": "x"}])]},
        "feedback[0].acceptedSuggestions[0].id: Field required",
    ),
    (
        {"feedback": [item("c", "overridden", acceptedSuggestions=[{"id": "s"}])]},
        "acceptedSuggestions goes with outcome 'accepted'",
    ),
    (
        {"feedback": [item("c", "accepted", overrideReason={"userComment": "no"})]},
        "overrideReason goes with outcome 'overridden'",
    ),
    ({"feedback": [item("c", "overridden", overrideReason=None)]}, "feedback[0]: overrideReason is null"),
    ({"feedback": [item("c", "overridden", overrideReason={})]}, "feedback[0]: overrideReason is {}"),
    (
        {"feedback": [item("c", "overridden", overrideReason={"reason": {"code": "12354"}})]},
        "feedback[0].overrideReason.reason.system: Field required",
    ),
    (
        {"feedback": [item("c", "overridden", overrideReason={"note": "x"})]},
        "needs a reason (Coding) or a userComment",
    ),
    (
        {"feedback": [item("c", "overridden", outcomeTimestamp="2025-12-06T10:00:00")]},
        "is not an RFC 3339 date-time with a zone",
    ),
    (
        {"feedback": [item("c", "overridden", outcomeTimestamp="2025-12-06")]},
        "is not an RFC 3339 date-time with a zone",
    ),
    (
        {"feedback": [item("c", "overridden", outcomeTimestamp="2025-02-30T10:00:00Z")]},
        "is not a valid date-time",
    ),
    (
        {"feedback": [item("ok", "overridden"), item("bad", "overridden", outcomeTimestamp="yesterday")]},
        "feedback[1].outcomeTimestamp",
    ),
]


@pytest.fixture(scope="module")
def small_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    tmp = tmp_path_factory.mktemp("feedback-errors")
    db = tmp / "feedback.sqlite"
    with running_service(
        tmp, "--allow-unauthenticated", "--feedback-db", str(db), "--max-body-bytes", "4096"
    ) as service:
        yield service, db


@pytest.mark.parametrize(("body", "message"), MALFORMED, ids=[m for _, m in MALFORMED])
def test_malformed_feedback_is_400_with_where_and_why(
    small_service: tuple[Service, Path], body: Any, message: str
) -> None:
    service, db = small_service
    before = stored(db)
    answer = post(service, body)
    assert answer.status_code == 400, answer.text
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert message in outcome["issue"][0]["diagnostics"]
    assert stored(db) == before  # all or nothing: the valid item of a bad request is not kept either


def test_unknown_service_wrong_type_and_oversize(small_service: tuple[Service, Path]) -> None:
    service, db = small_service
    before = stored(db)
    good = {"feedback": [item("c", "overridden")]}
    for service_id in ("order-sign", "patient-view-x"):
        answer = post(service, good, service_id)
        assert answer.status_code == 404
        assert (
            answer.json()["issue"][0]["diagnostics"]
            == f"no CDS service '{service_id}' (see GET /cds-services)"
        )
    assert post(service, b"{not json", "nope").status_code == 404  # the service is checked first
    wrong_type = post(service, json.dumps(good).encode(), **{"Content-Type": "text/plain"})
    assert (
        wrong_type.status_code == 415 and "application/json" in wrong_type.json()["issue"][0]["diagnostics"]
    )
    big = {"feedback": [item(f"card-{i}", "overridden") for i in range(60)]}
    assert post(service, big).status_code == 413
    assert stored(db) == before
    assert post(service, good, **{"Content-Type": "application/json; charset=utf-8"}).status_code == 200
    assert [r["card"] for r in stored(db)[len(before) :]] == ["c"]


def test_report_counts_survive_a_killed_server(tmp_path: Path) -> None:
    """Stored before the 200: a server killed (SIGKILL) right after answering lost nothing."""
    db = tmp_path / "feedback.sqlite"
    reasons = json.loads((EXAMPLES / "override-reasons.spec-2.0.1.json").read_text())["overrideReasons"]
    refused, contraindicated = reasons  # "Patient refused", "Contraindicated"
    seed(
        db,
        "redflags-patient-view",
        [ShownCard(f"ces-{i}", "cauda_equina_syndrome", "critical", "critical") for i in range(1, 5)],
    )
    seed(
        db,
        "redflags-encounter-start",
        [ShownCard(f"dvt-{i}", "deep_vein_thrombosis", "likely", "warning") for i in (1, 2)],
    )
    first = [
        item("ces-1", "accepted"),
        item("ces-2", "overridden", overrideReason={"reason": contraindicated}),
        item("ces-3", "overridden", overrideReason={"reason": refused, "userComment": "family decides"}),
    ]
    second = [
        item("ces-3", "overridden", overrideReason={"reason": refused}),  # the same card reported again
        item("dvt-1", "overridden", overrideReason={"userComment": "already anticoagulated"}),
        item("dvt-2", "overridden", overrideReason={"reason": contraindicated}),
        item("lost-1", "accepted"),
        item("lost-1", "accepted"),
        item("lost-2", "overridden"),
    ]
    with running_service(tmp_path, "--allow-unauthenticated", "--feedback-db", str(db)) as service:
        assert post(service, {"feedback": first}).status_code == 200
        service.process.kill()
        service.process.wait()
    with running_service(tmp_path, "--allow-unauthenticated", "--feedback-db", str(db)) as service:
        assert post(service, {"feedback": second[:3]}, "redflags-encounter-start").status_code == 200
        assert post(service, {"feedback": second[3:]}).status_code == 200

    data = report_json(db)
    rules = by_rule(data)
    assert rules["cauda_equina_syndrome"] == {
        "rule": "cauda_equina_syndrome",
        "shown": 4,
        "accepted": 1,
        "overridden": 2,
        "no_feedback": 1,
        "feedback_items": 4,
        "overridden_without_reason": 0,
        "override_reasons": [
            {"system": contraindicated["system"], "code": "12354", "display": "Contraindicated", "cards": 1},
            {
                "system": refused["system"],
                "code": "reason-code-provided-by-service",
                "display": "Patient refused",
                "cards": 1,
            },
        ],
    }
    assert rules["deep_vein_thrombosis"] == {
        "rule": "deep_vein_thrombosis",
        "shown": 2,
        "accepted": 0,
        "overridden": 2,
        "no_feedback": 0,
        "feedback_items": 2,
        "overridden_without_reason": 1,
        "override_reasons": [
            {"system": contraindicated["system"], "code": "12354", "display": "Contraindicated", "cards": 1}
        ],
    }
    assert data["unknown_cards"] == {"feedback_items": 3, "cards": 2, "accepted": 1, "overridden": 1}

    table = report(db, "table")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    ces = next(line for line in lines if "cauda_equina_syndrome" in line)
    assert [c.strip() for c in ces.split("│")[2:8]] == ["4", "1", "2", "1", "4", "50%"]
    dvt = next(line for line in lines if "deep_vein_thrombosis" in line)
    assert [c.strip() for c in dvt.split("│")[2:8]] == ["2", "0", "2", "0", "2", "100%"]
    assert "Contraindicated [12354]: 1" in table.stdout and "Patient refused" in table.stdout
    assert "no coded reason: 1" in table.stdout
    assert "unknown cards: 3 feedback items on 2 cards (1 accepted, 1 overridden)" in table.stdout
    assert "family decides" not in table.stdout  # comments are stored, never printed


def test_two_servers_and_the_card_recorder_write_one_db_concurrently(tmp_path: Path) -> None:
    """Three worker processes and a card-recording thread share the file; every item is kept."""
    db = tmp_path / "feedback.sqlite"
    requests_per_client, items_per_request, clients = 25, 4, 8
    cards = [f"c-{n}-{uuid.uuid4()}" for n in range(requests_per_client * items_per_request * clients)]
    with (
        running_service(
            tmp_path, "--allow-unauthenticated", "--feedback-db", str(db), "--workers", "2"
        ) as one,
        running_service(tmp_path, "--allow-unauthenticated", "--feedback-db", str(db)) as two,
    ):
        start = threading.Barrier(clients + 1)

        def record_cards() -> None:
            store = SqliteFeedbackStore.open(db)
            start.wait()
            for i in range(0, len(cards), 10):
                store.record_cards(
                    "redflags-patient-view",
                    [ShownCard(c, "rhabdomyolysis", "high", "critical") for c in cards[i : i + 10]],
                    SHOWN_AT,
                )
            store.close()

        def client(k: int) -> list[int]:
            start.wait()
            statuses = []
            with requests.Session() as session:
                for r in range(requests_per_client):
                    base = (k * requests_per_client + r) * items_per_request
                    batch = [
                        item(cards[base + j], "accepted" if j == 0 else "overridden")
                        for j in range(items_per_request)
                    ]
                    target = (one, two)[(k + r) % 2]
                    answer = session.post(
                        f"{target.url}/cds-services/redflags-patient-view/feedback",
                        json={"feedback": batch},
                        timeout=60,
                    )
                    statuses.append(answer.status_code)
            return statuses

        with ThreadPoolExecutor(clients + 1) as pool:
            recorder = pool.submit(record_cards)
            results = [pool.submit(client, k) for k in range(clients)]
            statuses = [s for future in results for s in future.result()]
            recorder.result()
    assert statuses == [200] * (clients * requests_per_client)
    rows = stored(db)
    assert sorted(r["card"] for r in rows) == sorted(cards)
    (rule,) = report_json(db)["rules"]
    total = len(cards)
    assert (rule["shown"], rule["accepted"], rule["overridden"], rule["feedback_items"]) == (
        total,
        total // items_per_request,
        total - total // items_per_request,
        total,
    )


def test_report_refuses_missing_corrupt_and_foreign_databases(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 8)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
    newer = tmp_path / "newer.sqlite"
    SqliteFeedbackStore.open(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    cases = {
        tmp_path / "absent.sqlite": "no feedback database at",
        corrupt: "not a readable feedback database",
        foreign: "not a redflags feedback database",
        newer: f"schema version [{SCHEMA_VERSION + 1}], this redflags reads version {SCHEMA_VERSION}",
    }
    for path, message in cases.items():
        done = report(path)
        missing = path.name == "absent.sqlite"  # issue 12 item 3: a missing store is exit 2
        assert (done.returncode, done.stdout) == (2 if missing else 1, ""), path
        assert (
            done.stderr == f"Error: no feedback database at {path} (serve creates one)\n"
            if missing
            else message in done.stderr
        )
        assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "absent.sqlite").exists()  # the report never creates a database
    with pytest.raises(FeedbackStoreError, match="not a redflags feedback database"):
        SqliteFeedbackStore.open(foreign)


def test_serve_refuses_an_unusable_feedback_db(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "redflags.cli",
            "serve",
            "--allow-unauthenticated",
            "--port",
            "1",
            "--feedback-db",
            str(corrupt),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"Error: {corrupt}: not a readable feedback database: file is not a database" in done.stderr


def test_a_card_uuid_keeps_its_first_rule(tmp_path: Path) -> None:
    db = tmp_path / "feedback.sqlite"
    seed(db, "redflags-patient-view", [ShownCard("same", "rhabdomyolysis", "high", "critical")])
    seed(db, "redflags-encounter-start", [ShownCard("same", "alcoholic_myopathy", "possible", "info")])
    assert [(r["rule"], r["shown"]) for r in report_json(db)["rules"]] == [("rhabdomyolysis", 1)]


def test_record_shown_reports_but_swallows_a_store_failure(tmp_path: Path) -> None:
    """The card producer's helper: a broken store must not cost the clinician the cards."""
    store = SqliteFeedbackStore.open(tmp_path / "feedback.sqlite")
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(feedback_store=store)))
    card = ShownCard("card-1", "rhabdomyolysis", "high", "critical")
    assert anyio.run(record_shown, request, "redflags-patient-view", [card], SHOWN_AT) is True
    assert [(r.rule, r.shown, r.no_feedback) for r in store.report().rules] == [("rhabdomyolysis", 1, 1)]
    store.close()
    assert anyio.run(record_shown, request, "redflags-patient-view", [card], SHOWN_AT) is False
