"""How redflags opens a PostgreSQL database (state, feedback, jti): pool, deadlines, schema, errors.

Imported only when a store is named by a ``postgresql://`` URL (``redflags.state.stores``), so
the embedded default never loads psycopg.

- One bounded ``psycopg_pool.ConnectionPool`` per store: a call waits at most ``WAIT_S`` for a
  connection, a new connection at most ``CONNECT_TIMEOUT_S``, a statement at most
  ``STATEMENT_TIMEOUT_MS`` (server side): no call hangs past its deadline. Each connection is
  checked when handed out, so after the server restarted the dead ones are replaced without
  anyone noticing (the pool recovers by itself); connections are in autocommit and every
  store call opens its own transaction.
- Schema: one ``schema_version`` row per kind of store (``state``, ``feedback``, ``jti``) in
  the one database; forward-only migrations run in one transaction under an advisory lock
  (replicas starting together migrate once); a newer version than the code is refused with
  one line, nothing changed.
- Errors: the database unreachable, restarting or too slow is ``unavailable`` (the caller's
  ``...Unavailable`` class: the service answers 503); anything else is the store's error.
  Every message is one line naming host and database, never the password.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool

from engine.logger import get_logger
from redflags.state.location import redact

log = get_logger("redflags.state")

CONNECT_TIMEOUT_S = 5
#: Longest wait for a free (or new) pooled connection before the call is refused as unavailable.
WAIT_S = 10.0
#: Longest statement, server side; the patient lock waits this long at most too.
STATEMENT_TIMEOUT_MS = 15_000
#: SQLSTATE classes of a server that is gone, going or not there yet (08: connection, 57: operator
#: intervention such as a shutdown or a cancelled statement, 53: out of resources).
_UNAVAILABLE_CLASSES = ("08", "57", "53")


@dataclass(frozen=True, slots=True)
class Schema:
    """One kind of store's tables in the shared database: ``migrations[n]`` makes version n."""

    kind: str
    migrations: Mapping[int, tuple[str, ...]]

    @property
    def version(self) -> int:
        return max(self.migrations)


def where(url: str) -> str:
    """``host:port/dbname`` of a URL, for messages (never user or password)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return redact(url)
    host = info.get("host") or "localhost"
    port = info.get("port") or "5432"
    return f"{host}:{port}/{info.get('dbname') or info.get('user') or ''}"


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot serve now (worth a 503 and a later retry), rather than a bug or bad data."""
    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed | psycopg.OperationalError):
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.Error) and state[:2] in _UNAVAILABLE_CLASSES


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


class Database:
    """A pool on one URL and the store kind using it; raises the kind's error classes."""

    def __init__(
        self,
        url: str,
        kind: str,
        error: type[Exception],
        unavailable: type[Exception],
        *,
        max_size: int = 8,
    ) -> None:
        self.url = url
        self.kind = kind
        self.where = where(url)
        self._error = error
        self._unavailable = unavailable
        self._pool = psycopg_pool.ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            timeout=WAIT_S,
            open=False,
            check=psycopg_pool.ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                "application_name": f"redflags-{kind}",
            },
            # a failed connection is not retried in the background with a growing backoff: the
            # next call that needs one connects, so calls work again as soon as the server is back
            reconnect_timeout=0,
            name=f"redflags-{kind}",
        )

    def open(self, schema: Schema) -> int | None:
        """Connect once directly (a wrong address or password is one line now, not after the
        pool's retries), create or migrate the schema, then start the pool. Returns the
        version migrated from (None: not migrated)."""
        try:
            conn = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="redflags"
            )
        except psycopg.Error as exc:
            raise self._unavailable(
                f"cannot connect to PostgreSQL at {self.where} ({self.kind} store): {one_line(exc)}"
            ) from None
        try:
            with conn:
                migrated = migrate(conn, schema, self._error, self.where)
        except psycopg.Error as exc:
            raise self.failure(exc, "open") from None
        self._pool.open(wait=False)
        return migrated

    def failure(self, exc: BaseException, what: str) -> Exception:
        """The one-line error of a failed call (unavailable or not)."""
        kind = self._unavailable if is_unavailable(exc) else self._error
        return kind(f"PostgreSQL {self.kind} store at {self.where}: {what} failed: {one_line(exc)}")

    @contextmanager
    def connection(self, what: str = "call") -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (no transaction); psycopg and pool errors become one line."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise self.failure(exc, what) from None

    @contextmanager
    def transaction(self, what: str = "write") -> Iterator[psycopg.Connection[Any]]:
        with self.connection(what) as conn, conn.transaction():
            yield conn

    def ping(self) -> None:
        """A round trip on a pooled connection: the readiness probe (raises the kind's errors)."""
        with self.connection("ping") as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._pool.close()


def migrate(
    conn: psycopg.Connection[Any], schema: Schema, error: Callable[[str], Exception], where: str
) -> int | None:
    """Create or migrate ``schema.kind``'s tables forward in one transaction; refuse a newer one."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('redflags schema', 0))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (kind TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = conn.execute("SELECT version FROM schema_version WHERE kind = %s", (schema.kind,)).fetchone()
        found = row[0] if row else 0
        if found > schema.version:
            raise error(
                f"PostgreSQL {schema.kind} store at {where}: schema version {found} is newer than this "
                f"redflags reads ({schema.version}); upgrade redflags"
            )
        for target in range(found + 1, schema.version + 1):
            for statement in schema.migrations[target]:
                conn.execute(statement)  # our own constant SQL
        conn.execute(
            "INSERT INTO schema_version (kind, version) VALUES (%s, %s) "
            "ON CONFLICT (kind) DO UPDATE SET version = excluded.version",
            (schema.kind, schema.version),
        )
    if 0 < found < schema.version:
        log.info("state.migrated", kind=schema.kind, from_version=found, to_version=schema.version)
        return found
    return None


__all__ = ["Database", "Schema", "is_unavailable", "migrate", "one_line", "where"]
