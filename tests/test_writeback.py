"""``redflags replay --state --fhir-server``: history, alert lifecycle and delivery, end to end.

The command runs as a user runs it (a child process, real files), against a real FHIR server
on 127.0.0.1 (Medplum's router, ``fhir_server_harness``); what is checked is what the server
itself then holds (its search results), and what the state store and ``redflags outbox status``
say.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from redflags.state.sqlite_store import SqliteStateStore

from .conftest import FIXTURES
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401 (pytest fixture)
from .writeback_helpers import V01, alerts_of, bundle, entered_in_error, redflags, v01, write

HISTORY = FIXTURES / "history"
PRIORITY = "http://hl7.org/fhir/StructureDefinition/flag-priority"


def changes_of(run: subprocess.CompletedProcess) -> list[str]:
    return [c["change"] for line in run.stdout.splitlines() for c in orjson.loads(line).get("changes", [])]


def priority(flag: dict[str, Any]) -> str:
    (ext,) = [e for e in flag["extension"] if e["url"] == PRIORITY]
    return ext["valueCodeableConcept"]["coding"][0]["code"]


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state.sqlite"


def test_lifecycle_raise_escalate_deescalate_withdraw_on_a_real_server(
    tmp_path: Path,
    state: Path,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    """One Flag and one CarePlan follow the alert through four deliveries (16.1, 16.2)."""
    res = v01("wb1")
    deliveries = [
        # Monday's picture: back pain and bilateral sciatica -> cauda equina tier B (urgent)
        ("2025-03-10T12:00:00Z", bundle(res["wb1"], res["wb1-low-back-pain"], res["wb1-sciatica"])),
        # saddle numbness and a 350 mL post-void residual arrive -> tier A (critical), same Flag
        ("2025-03-10T12:30:00Z", bundle(res["wb1-saddle-numbness"], res["wb1-pvr"])),
        # both were entered in error -> back to tier B, same Flag
        (
            "2025-03-10T13:00:00Z",
            bundle(entered_in_error(res["wb1-saddle-numbness"]), entered_in_error(res["wb1-pvr"])),
        ),
        # and so was the sciatica -> nothing supports the alert: Flag inactive, CarePlan revoked
        ("2025-03-10T13:30:00Z", bundle(entered_in_error(res["wb1-sciatica"]))),
    ]
    expected = [("urgent", "PM", "active", "draft"), ("critical", "PH", "active", "draft"),
                ("urgent", "PM", "active", "draft"), (None, "PM", "inactive", "revoked")]  # fmt: skip
    for i, ((now, doc), (severity, code, flag_status, plan_status)) in enumerate(
        zip(deliveries, expected, strict=True)
    ):
        path = write(tmp_path / f"delivery-{i}.json", doc)
        run = redflags("replay", str(path), "--now", now, "--format", "json",
                       "--state", str(state), "--fhir-server", fhir_server.url)  # fmt: skip
        assert run.returncode == 0, run.stderr
        alerts = alerts_of(run).get("Patient/wb1", [])
        assert alerts == ([("cauda_equina_syndrome", severity)] if severity else []), (i, alerts)
        assert changes_of(run) == [["raised", "updated", "updated", "withdrawn"][i]]
        flags = fhir_server.search("Flag?subject=Patient/wb1")
        plans = fhir_server.search("CarePlan?subject=Patient/wb1")
        assert len(flags) == 1 and len(plans) == 1, (i, flags, plans)  # never a second one
        (flag,), (plan,) = flags, plans
        assert (priority(flag), flag["status"], plan["status"]) == (code, flag_status, plan_status), i
        assert {"reference": f"Flag/{flag['id']}"}.items() <= plan["supportingInfo"][0].items()
        if flag_status == "inactive":
            assert flag["period"]["end"] == "2025-03-10T13:30:00Z"

    # the same delivery again: nothing changes, nothing is queued or sent, nothing is announced
    store = SqliteStateStore.open(state)
    try:
        before = store.counts()
        changes = [t.change for t in store.transitions("Patient/wb1")]
    finally:
        store.close()
    assert changes == ["raised", "updated", "updated", "withdrawn"]
    assert before == {"pending": 0, "failed": 0, "delivered": 4}
    again = redflags("replay", str(tmp_path / "delivery-3.json"), "--now", "2025-03-10T14:00:00Z",
                     "--format", "json", "--state", str(state), "--fhir-server", fhir_server.url)  # fmt: skip
    assert again.returncode == 0 and changes_of(again) == [], again.stderr
    assert "delivered 0" in again.stderr and "delivered 4" in again.stderr  # nothing sent this run


def test_history_makes_wednesday_fire_what_mondays_delivery_began(tmp_path: Path) -> None:
    """Weakness in Monday's bundle + absent reflexes in Wednesday's = Guillain-Barré on Wednesday."""
    monday, wednesday = HISTORY / "gbs-monday.json", HISTORY / "gbs-wednesday.json"
    state = str(tmp_path / "state.sqlite")
    pure = redflags("replay", str(wednesday), "--now", "2025-03-12T12:00:00Z", "--format", "json")
    assert alerts_of(pure) == {"Patient/v03": []}  # without --state, replay has no memory

    first = redflags(
        "replay", str(monday), "--now", "2025-03-10T12:00:00Z", "--format", "json", "--state", state
    )
    assert first.returncode == 0 and alerts_of(first) == {"Patient/v03": []}, first.stderr
    second = redflags(
        "replay", str(wednesday), "--now", "2025-03-12T12:00:00Z", "--format", "json", "--state", state
    )
    assert second.returncode == 0, second.stderr
    assert alerts_of(second) == {"Patient/v03": [("guillain_barre_syndrome", "critical")]}

    forgot = redflags("history", "forget", "Patient/v03", "--state", state, "--force")  # GBS active
    assert forgot.returncode == 0 and "forgot Patient/v03" in forgot.stdout, forgot.stderr
    third = redflags(
        "replay", str(wednesday), "--now", "2025-03-12T12:00:00Z", "--format", "json", "--state", state
    )
    assert alerts_of(third) == {"Patient/v03": []}  # Monday's delivery is gone


def test_history_older_than_the_retention_window_is_dropped(tmp_path: Path) -> None:
    state = str(tmp_path / "state.sqlite")
    monday, wednesday = HISTORY / "gbs-monday.json", HISTORY / "gbs-wednesday.json"
    redflags("replay", str(monday), "--now", "2025-03-10T12:00:00Z", "--state", state)
    run = redflags("replay", str(wednesday), "--now", "2025-03-12T12:00:00Z", "--format", "json",
                   "--state", state, "--retention-days", "1")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert alerts_of(run) == {"Patient/v03": []}


def test_state_commands_refuse_bad_use_with_one_line(tmp_path: Path) -> None:
    not_a_db = write(tmp_path / "junk.sqlite", {"not": "sqlite"})
    not_smart = write(tmp_path / "smart.json", {"token_url": "http://127.0.0.1:9/token"})
    for args in (
        [
            "outbox",
            "flush",
            "--state",
            str(tmp_path / "s.sqlite"),
            "--fhir-server",
            "http://127.0.0.1:9",
            "--fhir-smart",
            str(not_smart),
        ],
        [
            "serve",
            "--allow-unauthenticated",
            "--state",
            str(tmp_path / "s.sqlite"),
            "--fhir-server",
            "http://127.0.0.1:9",
            "--fhir-smart",
            str(not_smart),
            "--feedback-db",
            str(tmp_path / "f.sqlite"),
        ],
        ["outbox", "status", "--state", str(not_a_db)],
        ["history", "forget", "v03", "--state", str(tmp_path / "s.sqlite")],
        ["replay", str(V01), "--fhir-server", "http://127.0.0.1:9"],
        ["replay", str(V01), "--expect", "--state", str(tmp_path / "s.sqlite")],
    ):
        run = redflags(*args)
        assert run.returncode != 0, args
        assert "Traceback" not in run.stderr and run.stderr.strip(), (args, run.stderr)
