"""Delivery under faults (issue 5, point 7): each fault is injected between redflags and a real
FHIR server (``fault_proxy`` in front of Medplum); what counts is what the server then holds and
what ``redflags outbox status`` says.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from .conftest import ROOT
from .fault_proxy import FaultProxy, fault_proxy
from .fhir_server_harness import FhirServer, fhir_server  # noqa: F401 (pytest fixture)
from .writeback_helpers import NOW, positives, redflags

OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "invalid", "diagnostics": "Flag.subject: not allowed here"}],
}


def status(state: Path) -> dict[str, int]:
    run = redflags("outbox", "status", "--state", str(state))
    return {word: int(n) for word, n in (line.split() for line in run.stdout.splitlines())}


def flags(server: FhirServer, pid: str) -> list[dict]:
    return server.search(f"Flag?subject=Patient/{pid}")


def posts(proxy: FaultProxy) -> int:
    return sum(1 for s in proxy.seen if s.method == "POST")


@pytest.fixture
def proxy(fhir_server: FhirServer) -> Iterator[FaultProxy]:  # noqa: F811
    with fault_proxy(fhir_server.url) as running:
        yield running


def replay(folder: Path, state: Path, url: str, *extra: str) -> subprocess.CompletedProcess:
    return redflags("replay", str(folder), "--now", NOW, "--state", str(state), "--fhir-server", url, *extra)


def test_server_down_leaves_items_pending_until_it_returns(
    tmp_path: Path,
    proxy: FaultProxy,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    (pid,) = positives(tmp_path / "in", "down")
    state = tmp_path / "state.sqlite"
    proxy.down()
    started = time.monotonic()
    run = replay(tmp_path / "in", state, proxy.url, "--delivery-wait", "6")
    assert run.returncode == 1 and "pending 1" in run.stderr, run.stderr
    assert time.monotonic() - started < 60  # a server that stays down does not hang the command
    assert status(state) == {"pending": 1, "failed": 0, "delivered": 0}
    assert flags(fhir_server, pid) == []
    proxy.up()
    flush = redflags("outbox", "flush", "--state", str(state), "--fhir-server", proxy.url)
    assert flush.returncode == 0, flush.stderr
    assert status(state) == {"pending": 0, "failed": 0, "delivered": 1}
    assert len(flags(fhir_server, pid)) == 1


def test_500_then_200_is_delivered_by_a_retry(
    tmp_path: Path,
    proxy: FaultProxy,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    (pid,) = positives(tmp_path / "in", "e500")
    proxy.fail(500)
    run = replay(tmp_path / "in", tmp_path / "state.sqlite", proxy.url)
    assert run.returncode == 0, run.stderr
    assert posts(proxy) == 2
    assert len(flags(fhir_server, pid)) == 1


def test_429_waits_for_retry_after(tmp_path: Path, proxy: FaultProxy, fhir_server: FhirServer) -> None:  # noqa: F811
    (pid,) = positives(tmp_path / "in", "r429")
    proxy.fail(429, retry_after="2")
    run = replay(tmp_path / "in", tmp_path / "state.sqlite", proxy.url)
    assert run.returncode == 0, run.stderr
    first, second = [s for s in proxy.seen if s.method == "POST"]
    assert second.at - first.at >= 2.0
    assert len(flags(fhir_server, pid)) == 1


def test_a_slow_server_past_the_timeout_is_retried_without_duplicates(
    tmp_path: Path,
    proxy: FaultProxy,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    (pid,) = positives(tmp_path / "in", "slow")
    proxy.delay(3.0)  # the first request reaches the server late, after the client gave up
    run = replay(tmp_path / "in", tmp_path / "state.sqlite", proxy.url, "--fhir-timeout", "1")
    assert run.returncode == 0, run.stderr
    assert posts(proxy) >= 2
    assert proxy.wait_idle(timeout=30), "the late first request never landed"
    assert len(flags(fhir_server, pid)) == 1  # conditional create: the late copy added nothing


def test_400_with_outcome_is_failed_not_retried(
    tmp_path: Path,
    proxy: FaultProxy,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    (pid,) = positives(tmp_path / "in", "bad")
    state = tmp_path / "state.sqlite"
    proxy.fail(400, outcome=OUTCOME)
    run = replay(tmp_path / "in", state, proxy.url)
    assert run.returncode == 1 and "failed 1" in run.stderr, run.stderr
    assert posts(proxy) == 1
    shown = redflags("outbox", "status", "--state", str(state))
    assert shown.returncode == 1 and "failed 1" in shown.stdout
    assert "HTTP 400" in shown.stderr and "not allowed here" in shown.stderr
    flush = redflags("outbox", "flush", "--state", str(state), "--fhir-server", proxy.url)
    assert flush.returncode == 0 and posts(proxy) == 1  # a failed item is not sent again
    assert flags(fhir_server, pid) == []


def test_kill_9_mid_delivery_then_a_new_run_loses_and_duplicates_nothing(
    tmp_path: Path,
    proxy: FaultProxy,
    fhir_server: FhirServer,  # noqa: F811
) -> None:
    pids = positives(tmp_path / "in", "kill", 6)
    state = tmp_path / "state.sqlite"
    for _ in range(6):
        proxy.delay(0.7)  # slow enough to be killed between deliveries
    cmd = [sys.executable, "-m", "redflags.cli", "replay", str(tmp_path / "in"), "--now", NOW,
           "--state", str(state), "--fhir-server", proxy.url]  # fmt: skip
    child = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while posts(proxy) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert 3 <= posts(proxy) < 6, "killed mid-delivery"
    counts = status(state)
    assert counts["pending"] >= 1 and counts["pending"] + counts["delivered"] == 6

    assert proxy.wait_idle(timeout=30), "a delayed request never reached the server"
    again = replay(tmp_path / "in", state, proxy.url)  # the same files: nothing new to raise
    assert again.returncode == 0, again.stderr
    assert status(state) == {"pending": 0, "failed": 0, "delivered": 6}
    for pid in pids:
        assert len(flags(fhir_server, pid)) == 1, pid
        assert len(fhir_server.search(f"CarePlan?subject=Patient/{pid}")) == 1, pid


def test_outbox_items_are_transactions_of_at_most_three_entries(tmp_path: Path) -> None:
    """Medplum refuses conditional transactions over 8 entries: ours stay per patient and alert."""
    positives(tmp_path / "in", "small", 2)
    state = tmp_path / "state.sqlite"
    redflags("replay", str(tmp_path / "in"), "--now", NOW, "--state", str(state))
    from redflags.state.sqlite_store import SqliteStateStore

    store = SqliteStateStore.open(state)
    try:
        items = store.deliveries("pending")
    finally:
        store.close()
    assert len(items) == 2
    for item in items:
        assert item.bundle["type"] == "transaction" and len(item.bundle["entry"]) == 3
        assert orjson.loads(orjson.dumps(item.bundle))["entry"][1]["request"]["ifNoneExist"]
