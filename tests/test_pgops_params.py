"""What an operator's URL and database settings mean to the PostgreSQL stores: the URL's
``options`` (a ``search_path``) and ``application_name`` reach every pooled connection, libpq's
own parameters (``sslmode``) pass through, and a migration is not cut by the role's or
database's ``statement_timeout`` (tests/pg_server.py runs the server)."""

from __future__ import annotations

import psycopg
import pytest

from redflags.state.model import Evaluated, StateStoreError, StateStoreUnavailable
from redflags.state.postgres_db import Schema, migrate
from redflags.state.stores import open_state, open_stores

from .test_state_store import delivery


def names(url: str, sql: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {str(row[0]) for row in conn.execute(sql).fetchall()}


def test_a_search_path_in_the_url_holds_for_every_pooled_connection(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA redflags")
    url = f"{pg_url}?options=-c%20search_path%3Dredflags"
    with open_state(url) as store:  # created there, then used there by the pool's connections
        store.commit(Evaluated("Patient/1", 100, deliveries=[delivery("Patient/1", "r")]))
        assert store.counts()["pending"] == 1
    tables = (
        "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_name = 'outbox'"
    )
    assert names(pg_url, tables) == {"redflags.outbox"}


def test_connections_are_named_for_the_dba_and_the_url_may_rename_them(pg_url: str) -> None:
    active = "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
    stores = open_stores(pg_url)
    try:
        for store in (stores.state, stores.feedback, stores.jti):
            store._db._pool.wait(timeout=30)  # type: ignore[union-attr]
        assert {"redflags-state", "redflags-feedback", "redflags-jti"} <= names(pg_url, active)
    finally:
        stores.close()
    with open_state(f"{pg_url}?application_name=site-a-redflags") as store:
        store._db._pool.wait(timeout=30)  # type: ignore[attr-defined]
        assert "site-a-redflags" in names(pg_url, active)


def test_libpq_parameters_pass_through(pg_url: str) -> None:
    with open_state(f"{pg_url}?sslmode=disable&pool_max=2&connect_timeout=5") as store:
        assert store.counts()["pending"] == 0
    with pytest.raises(StateStoreUnavailable) as refused:  # the test server has no SSL: sslmode reached libpq
        open_state(f"{pg_url}?sslmode=require&pool_max=2")
    assert "SSL" in str(refused.value) and "\n" not in str(refused.value)


def test_a_migration_is_not_cut_by_the_databases_statement_timeout(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        db = conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        conn.execute(f"ALTER DATABASE {db} SET statement_timeout = '50ms'")
    slow = Schema(kind="slow", migrations={1: ("SELECT pg_sleep(0.3)",)})
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert migrate(conn, slow, StateStoreError, "here") is None
        (version,) = conn.execute("SELECT version FROM schema_version WHERE kind = 'slow'").fetchone()  # type: ignore[misc]
        assert version == 1
        with pytest.raises(psycopg.errors.QueryCanceled):  # the database's own setting still holds elsewhere
            conn.execute("SELECT pg_sleep(0.3)")
