"""The pieces of /metrics and /readyz on their own: token check, store pings, the outbox's
oldest item, the FHIR client's retry hook, and metrics off outside ``serve``."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from fhir_adapters.fhir_client import FhirClient, FhirTransientError, RetryPolicy
from fhir_adapters.outcome import outcome
from redflags.service.metrics import authorized
from redflags.state.feedback import SqliteFeedbackStore
from redflags.state.model import Evaluated, FeedbackStoreError, NewDelivery, StateStoreError
from redflags.state.sqlite_store import SqliteStateStore

from .cli_helpers import run
from .fetch_servers import RawServer, answer_json
from .service_harness import ROOT


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("", False),
        (None, False),
    ],
)
def test_the_metrics_token_is_a_bearer_token_compared_whole(header: str | None, accepted: bool) -> None:
    assert authorized(header, "s3cret") is accepted


def _deliveries(store: SqliteStateStore, patient: str, now: int) -> list[int]:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": []}
    new = NewDelivery(patient, "cauda_equina_syndrome", "raised", bundle)
    return store.commit(Evaluated(patient, now, deliveries=[new]))


def test_oldest_pending_is_the_first_item_still_waiting(tmp_path) -> None:
    with SqliteStateStore.open(tmp_path / "state.sqlite") as store:
        assert store.oldest_pending() is None
        (first,) = _deliveries(store, "Patient/a", 100)
        _deliveries(store, "Patient/b", 200)
        assert store.oldest_pending() == 100
        store.mark_delivered(first, 300)
        assert store.oldest_pending() == 200


def test_a_state_store_whose_file_moved_or_closed_does_not_answer_its_ping(tmp_path) -> None:
    folder = tmp_path / "stores"
    store = SqliteStateStore.open(folder / "state.sqlite")
    store.ping()
    folder.rename(tmp_path / "moved")  # root reads an unreadable folder: moving it away is the test
    with pytest.raises(StateStoreError, match=r"state\.sqlite"):
        store.ping()
    (tmp_path / "moved").rename(folder)
    store.ping()
    store.close()
    with pytest.raises(StateStoreError, match="closed"):
        store.ping()


def test_a_feedback_store_whose_file_was_replaced_does_not_answer_its_ping(tmp_path) -> None:
    path = tmp_path / "feedback.sqlite"
    store = SqliteFeedbackStore.open(path)
    store.ping()
    path.rename(tmp_path / "old.sqlite")
    SqliteFeedbackStore.open(path).close()  # another file under the same name
    with pytest.raises(FeedbackStoreError, match="moved or replaced"):
        store.ping()
    store.close()


def test_the_fhir_client_tells_its_hook_of_each_retry_with_the_status() -> None:
    told: list[int | None] = []
    unavailable = answer_json(outcome("later", "transient"), "503 Service Unavailable")
    policy = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.01)
    with RawServer(unavailable) as server:
        client = FhirClient(server.url, retry=policy, sleep=lambda _s: None, on_retry=told.append)
        with client, pytest.raises(FhirTransientError):
            client.request("GET", "metadata")
    assert told == [503, 503]  # three sends: two of them again


def test_outside_serve_metrics_cost_nothing_and_prometheus_is_not_imported() -> None:
    code = (
        "import sys, os\n"
        "os.environ.pop('REDFLAGS_METRICS_DIR', None)\n"
        "from redflags import metrics\n"
        "metrics.http_answer('GET', '/x', 200, 0.1)\n"
        "metrics.alert_transition('r', 'A', 'raised')\n"
        "with metrics.evaluation('answer'):\n"
        "    pass\n"
        "assert not metrics.enabled() and 'prometheus_client' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_metrics_token_given_twice_is_one_line_and_exit_2(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("abc\n")
    proc = run(
        "serve", "--allow-unauthenticated", "--no-state", "--port", "0",
        "--feedback-db", tmp_path / "feedback.sqlite",
        "--metrics-token", "abc", "--metrics-token-file", token,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--metrics-token-file" in proc.stderr and "abc\n" not in proc.stderr


def test_the_grafana_dashboard_queries_only_metrics_the_service_exposes() -> None:
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    exposed = set()
    for module in ("redflags/metrics.py", "redflags/service/metrics.py"):
        exposed |= set(re.findall(r'"(redflags_[a-z_]+)"', (ROOT / module).read_text()))
    queried = {
        re.sub(r"_(bucket|count|sum|total)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"redflags_[a-z_]+", target["expr"])
    }
    assert queried and queried <= exposed, queried - exposed
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"${DS_PROMETHEUS}"}  # asked on import


#: Run in a process of its own: metrics on (as ``serve`` does), the app in-process, its feedback
#: store closed under it; then a store error escaping an engine call. Prints /metrics' text.
_STORE_ERRORS = """
import sys, requests
from pathlib import Path
from redflags import metrics
metrics.enable(sys.argv[2])
from redflags.service.app import create_app
from redflags.service.settings import ServiceSettings
from redflags.state.model import StateStoreError
from tests.service_harness import serving_app
app = create_app(ServiceSettings(allow_unauthenticated=True, feedback_db=sys.argv[1]))
body = {"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "2025-12-06T10:00:00Z"}]}
with serving_app(app) as url:
    app.state.feedback_store.close()
    answer = requests.post(f"{url}/cds-services/redflags-patient-view/feedback", json=body, timeout=30)
    assert answer.status_code == 503, answer.text
    try:
        with metrics.evaluation("answer"):
            raise StateStoreError("state.sqlite: disk I/O error")
    except StateStoreError:
        pass
    print(requests.get(f"{url}/metrics", timeout=30).text)
"""


def test_store_errors_are_counted_by_store(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _STORE_ERRORS, str(tmp_path / "feedback.sqlite"), str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'redflags_store_errors_total{store="feedback"} 1.0' in proc.stdout
    assert 'redflags_store_errors_total{store="state"} 1.0' in proc.stdout
    assert 'redflags_evaluation_seconds_count{call="answer"} 1.0' in proc.stdout
