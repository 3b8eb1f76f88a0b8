"""A store whose database cannot be reached is a 503 + OperationOutcome, never a 500.

The one table (``redflags.service.http.catch_all.ANSWERS``) every route and the last-resort
middleware answer from: the store's message (it names the database host) is not sent, and the
client is told when to call again. The end-to-end proof, PostgreSQL restarted under load at two
replicas, is tests/test_replicas_outage.py.
"""

from __future__ import annotations

import orjson
import pytest

from redflags.service.http.catch_all import ANSWERED, error_response
from redflags.state.model import (
    FeedbackStoreUnavailable,
    PatientBusy,
    StateStoreError,
    StateStoreUnavailable,
    StoreUnavailable,
)


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/cds-services/redflags-patient-view", "application/json"),
        ("/fhir/$evaluate", "application/fhir+json"),
    ],
)
@pytest.mark.parametrize("error", [StateStoreUnavailable, FeedbackStoreUnavailable])
def test_an_unreachable_database_is_503_with_retry_after_and_no_host(
    path: str, media_type: str, error: type[StoreUnavailable]
) -> None:
    answer = error_response(
        {"type": "http", "path": path}, error("db.internal:5432/redflags: connection refused")
    )
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert answer.media_type == media_type
    body = orjson.loads(answer.body)
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "transient"
    assert "db.internal" not in answer.body.decode()
    assert issubclass(error, ANSWERED)  # the routes hand it to error_response themselves


def test_other_store_errors_stay_server_errors() -> None:
    answer = error_response({"type": "http", "path": "/fhir/$evaluate"}, StateStoreError("corrupt page"))
    assert answer.status_code == 500


def test_a_patient_changed_by_other_evaluations_every_time_is_503_not_500() -> None:
    """Contention (every attempt found the patient changed meanwhile) is transient: call again."""
    answer = error_response({"type": "http", "path": "/fhir/$evaluate"}, PatientBusy("changed 5 times"))
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "other calls" in orjson.loads(answer.body)["issue"][0]["diagnostics"]
