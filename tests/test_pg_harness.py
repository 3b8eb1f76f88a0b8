"""The test PostgreSQL harness itself (tests/pg_server.py): fresh databases, restart, skip reason."""

from __future__ import annotations

import psycopg
import pytest

from . import pg_server as harness


def test_each_fresh_database_is_empty_and_its_own(pg_server: harness.PgServer) -> None:
    first, second = pg_server.fresh_url(), pg_server.fresh_url()
    assert first != second
    with psycopg.connect(first, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    with psycopg.connect(second, autocommit=True) as conn:
        found = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename = 't'").fetchone()
    assert found == (0,)


def test_restart_keeps_the_data_and_the_port(pg_server: harness.PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    pg_server.restart()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (7,)


def test_missing_binaries_are_a_stated_skip_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness.shutil, "which", lambda _name: None)
    monkeypatch.setattr(harness.glob, "glob", lambda _pattern: [])
    with pytest.raises(harness.PgUnavailable, match="PostgreSQL server binaries not found"):
        harness.find_bindir()
