"""The PostgreSQL stores' schema: one version row per kind in the shared database, created once
when replicas start together, a newer version refused with one line and nothing changed."""

from __future__ import annotations

import threading

import psycopg
import pytest

from redflags.state.jti import JtiStoreError
from redflags.state.model import FeedbackStoreError, StateStoreError
from redflags.state.stores import open_feedback, open_jti, open_state, open_stores

OPENERS = {
    "state": (open_state, StateStoreError),
    "feedback": (open_feedback, FeedbackStoreError),
    "jti": (open_jti, JtiStoreError),
}


def versions(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return dict(conn.execute("SELECT kind, version FROM schema_version").fetchall())


def test_replicas_starting_together_create_the_schema_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_stores(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert versions(pg_url) == {"state": 1, "feedback": 1, "jti": 1}


@pytest.mark.parametrize("kind", list(OPENERS))
def test_a_newer_schema_is_refused_with_one_line_and_left_alone(pg_url: str, kind: str) -> None:
    opener, error = OPENERS[kind]
    opener(pg_url).close()  # type: ignore[attr-defined]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 7 WHERE kind = %s", (kind,))
    with pytest.raises(error) as raised:
        opener(pg_url)
    assert "7" in str(raised.value) and "upgrade redflags" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert versions(pg_url)[kind] == 7
