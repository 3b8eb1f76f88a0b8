"""The CLI on a store shared by tenants: ``replay --tenant``, ``history forget/tenants``, ``outbox``.

``redflags replay --now --state`` keeps its behaviour (issue 10, item 3: its operator owns the
store and its clock): it prunes history and withdraws alerts at ``--now``, but only in its own
tenant, and delivers only its own outbox items.
"""

from __future__ import annotations

from pathlib import Path

from redflags.state.sqlite_store import SqliteStateStore

from .conftest import FIXTURES
from .writeback_helpers import alerts_of, redflags

HISTORY = FIXTURES / "history"
MONDAY, WEDNESDAY = HISTORY / "gbs-monday.json", HISTORY / "gbs-wednesday.json"
PID, GBS = "Patient/v03", "guillain_barre_syndrome"


def replay(state: Path, path: Path, now: str, *more: str) -> dict:
    run = redflags("replay", str(path), "--now", now, "--format", "json", "--state", str(state), *more)
    assert run.returncode == 0, run.stderr
    return alerts_of(run)


def test_replay_prunes_and_withdraws_at_its_now_in_its_own_tenant_only(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    for tenant in ("default", "site-b"):
        replay(state, MONDAY, "2025-03-10T12:00:00Z", "--tenant", tenant)
        assert replay(state, WEDNESDAY, "2025-03-12T12:00:00Z", "--tenant", tenant) == {
            PID: [(GBS, "critical")]
        }
    # years later, replayed in the default tenant: its history expires and its alert is withdrawn
    assert replay(state, WEDNESDAY, "2030-01-01T00:00:00Z") == {PID: []}
    with SqliteStateStore.open(state) as store:
        assert [t.change for t in store.transitions(PID, tenant="default")] == ["raised", "withdrawn"]
        assert "Condition/v03-leg-weakness" not in store.facts_by_resource(PID)  # pruned at --now
        # the other tenant: nothing pruned, nothing withdrawn
        assert "Condition/v03-leg-weakness" in store.facts_by_resource(PID, tenant="site-b")
        assert list(store.active(PID, tenant="site-b")) == [GBS]

    tenants = redflags("history", "tenants", "--state", str(state))
    assert tenants.returncode == 0 and tenants.stdout.splitlines() == [
        "default\t1 patients",
        "site-b\t1 patients",
    ]
    status = redflags("outbox", "status", "--state", str(state), "--tenant", "site-b")
    assert status.stdout.splitlines() == ["pending 1", "failed 0", "delivered 0"], status.stderr
    everyone = redflags("outbox", "status", "--state", str(state))
    assert everyone.stdout.splitlines()[0] == "pending 3"


def test_forget_acts_on_one_tenant_and_names_the_others(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    replay(state, MONDAY, "2025-03-10T12:00:00Z", "--tenant", "site-b")
    forgot = redflags("history", "forget", PID, "--state", str(state))  # the default tenant: nothing
    assert forgot.returncode == 0 and "forgot Patient/v03 in tenant default: 0 records" in forgot.stdout
    assert "site-b" in forgot.stderr  # where that id is
    forgot = redflags("history", "forget", PID, "--state", str(state), "--tenant", "site-b")
    assert forgot.returncode == 0 and "0 records" not in forgot.stdout, forgot.stderr
    with SqliteStateStore.open(state) as store:
        assert store.tenants() == {}
