"""How redflags opens a PostgreSQL database (state, feedback, jti): pool, deadlines, schema, errors.

Imported only when a store is named by a ``postgresql://`` URL (``redflags.state.stores``), so
the embedded default never loads psycopg.

- One bounded ``psycopg_pool.ConnectionPool`` per store, sized by the URL's ``pool_min`` and
  ``pool_max`` (``postgres_url``; default 1 and the store's own maximum): a call waits at most
  ``pool_wait`` (``WAIT_S``) for a connection, and never past the deadline of the call it works
  for (``call_deadline``: the service's ``--call-deadline``), a new connection at most
  ``CONNECT_TIMEOUT_S``, a statement at most ``STATEMENT_TIMEOUT_MS`` (server side): no call
  hangs past its deadline. Each connection is checked when handed out, so after the server
  restarted the dead ones are replaced without anyone noticing (the pool recovers by itself);
  connections are in autocommit and every store call opens its own transaction. The URL's
  own ``options`` (a ``search_path``) and ``application_name`` are kept: ours only add to them.
- Schema: one ``schema_version`` row per kind of store (``state``, ``feedback``, ``jti``) in
  the one database; forward-only migrations run in one transaction under an advisory lock
  (replicas starting together migrate once); a newer version than the code is refused with
  one line, nothing changed.
- Errors: the database unreachable, restarting or too slow is ``unavailable`` (the caller's
  ``...Unavailable`` class: the service answers 503), with ``connection_lost`` set when the
  server dropped the connection mid-statement (a read may then be tried again on a fresh one);
  a login the server refuses at start (wrong password, no such role or database) is
  ``refused`` (``location.DatabaseRefused``: the CLI exits 2); anything else is the store's
  error. Every message is one line naming host and database, never the password.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg_pool

from engine.logger import get_logger
from redflags.state import call_deadline, postgres_url
from redflags.state.location import DatabaseRefused, UnsupportedLocation, redact

log = get_logger("redflags.state")

CONNECT_TIMEOUT_S = 5
#: Longest wait for a free (or new) pooled connection before the call is refused as unavailable
#: (``?pool_wait=``); shorter when the call's deadline is nearer.
WAIT_S = 10.0
#: Seconds of a call's deadline left to the caller after the store gave up waiting (it still
#: has to answer 503 before the engine pool's own deadline kills the process).
DEADLINE_MARGIN_S = 0.5
#: Longest wait of a readiness ping: below ``/readyz``'s own 5 s, so it names the problem.
PING_WAIT_S = 3.0
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
        info = psycopg.conninfo.conninfo_to_dict(postgres_url.split(url)[0])
    except (psycopg.ProgrammingError, postgres_url.InvalidPoolSetting):
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


#: What a server says when it refuses a login for good (libpq gives no SQLSTATE for a failed
#: connection: the server's message is all there is) -> what the operator should fix.
_REFUSALS = tuple(
    (re.compile(pattern), problem)
    for pattern, problem in (
        (r"password authentication failed", "wrong password or user"),
        (r"no password supplied", "the server asks for a password and the URL gives none"),
        (r'FATAL:\s+database ".*" does not exist', "no such database"),
        (r'FATAL:\s+role ".*" does not exist', "no such role (user)"),
        (r"no pg_hba\.conf entry", "the server's pg_hba.conf refuses this host, user or database"),
        (r"permission denied for database", "this role may not connect to this database"),
    )
)


def refusal(exc: BaseException) -> str | None:
    """What to fix when ``exc`` is a login the server refused for good (None: it is not)."""
    text = str(exc)
    return next((problem for pattern, problem in _REFUSALS if pattern.search(text)), None)


class _Pool(psycopg_pool.ConnectionPool):
    """The pool, remembering why its last new connection failed (the pool only logs it), so a
    call refused for want of a connection can say why (a changed password, too many clients)."""

    last_error: BaseException | None = None

    def _connect(self, timeout: float | None = None) -> psycopg.Connection[Any]:
        try:
            conn = super()._connect(timeout)
        except Exception as exc:
            self.last_error = exc
            raise
        self.last_error = None
        return conn


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
        refused: type[Exception] = DatabaseRefused,
    ) -> None:
        try:
            url, settings = postgres_url.split(url)
        except postgres_url.InvalidPoolSetting as exc:
            raise UnsupportedLocation(f"{kind} store {redact(url)!r}: {exc}") from None
        self.url = url  # what libpq reads: without redflags' own pool_* parameters
        self.kind = kind
        self.where = where(url)
        self._error = error
        self._unavailable = unavailable
        self._refused = refused
        self.wait_s = settings.wait_s if settings.wait_s is not None else WAIT_S
        min_size, max_size = settings.sizes(max_size)
        self._pool = _Pool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=self.wait_s,
            open=False,
            check=psycopg_pool.ConnectionPool.check_connection,
            kwargs={
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_S,
                "options": _options(url, f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"),
                "fallback_application_name": f"redflags-{kind}",  # the URL's application_name wins
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
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_S,
                fallback_application_name="redflags",
            )
        except psycopg.Error as exc:
            if problem := refusal(exc):
                raise self._refused(
                    f"PostgreSQL at {self.where} refused the {self.kind} store's login ({problem}): "
                    f"{one_line(exc)}"
                ) from None
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

    def failure(self, exc: BaseException, what: str, *, lost: bool = False) -> Exception:
        """The one-line error of a failed call (unavailable or not); ``lost``: the server
        dropped the connection (``connection_lost`` on the error)."""
        kind = self._unavailable if is_unavailable(exc) else self._error
        why = one_line(exc)
        if isinstance(exc, psycopg_pool.PoolTimeout):
            why = f"no free connection in the pool ({why})"
            if (last := self._pool.last_error) is not None:
                why += f"; its last new connection failed: {one_line(last)}"
        error = kind(f"PostgreSQL {self.kind} store at {self.where}: {what} failed: {why}")
        error.connection_lost = lost  # type: ignore[attr-defined]
        return error

    def wait_now(self, most: float | None = None) -> float:
        """Seconds this call may wait for a connection: ``pool_wait`` (or ``most``), and less
        when the call's deadline is nearer (``call_deadline``)."""
        wait = self.wait_s if most is None else min(most, self.wait_s)
        left = call_deadline.remaining()
        if left is not None:
            wait = min(wait, left - DEADLINE_MARGIN_S)
        return max(wait, 0.01)

    @contextmanager
    def connection(
        self, what: str = "call", *, wait: float | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (no transaction); psycopg and pool errors become one line."""
        conn: psycopg.Connection[Any] | None = None
        try:
            with self._pool.connection(timeout=self.wait_now(wait)) as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            raise self.failure(exc, what, lost=conn is not None and conn.broken) from None

    @contextmanager
    def transaction(self, what: str = "write") -> Iterator[psycopg.Connection[Any]]:
        with self.connection(what) as conn, conn.transaction():
            yield conn

    def ping(self) -> None:
        """A round trip on a pooled connection: the readiness probe (raises the kind's errors)."""
        with self.connection("ping", wait=PING_WAIT_S) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._pool.close()


def _options(url: str, ours: str) -> str:
    """The URL's own ``options`` (``-c search_path=...``) after ours, so the URL's win."""
    try:
        theirs = psycopg.conninfo.conninfo_to_dict(url).get("options") or ""
    except psycopg.ProgrammingError:
        theirs = ""
    return f"{ours} {theirs}".strip()


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
        if found < schema.version:  # a migration runs to its end, whatever the role's default timeout
            conn.execute("SET LOCAL statement_timeout = 0")
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


__all__ = ["Database", "Schema", "is_unavailable", "migrate", "one_line", "refusal", "where"]
