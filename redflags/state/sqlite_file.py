"""How redflags opens its SQLite files (feedback, state): shared by processes, checked on open.

Each store keeps one connection guarded by a lock and begins its own transactions: IMMEDIATE
for writes (the write lock up front, waiting up to the busy timeout), DEFERRED for reads (one
consistent snapshot that never blocks writers). A file is created with its schema and a
version row, or checked to be the store's own kind and version before anything else happens.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def connect(path: Path, *, create: bool, busy_timeout_s: float) -> sqlite3.Connection:
    """``mode=rw`` never creates a file, ``rwc`` does; isolation_level=None: we BEGIN ourselves;
    check_same_thread=False: the store's lock guards the connection."""
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    return sqlite3.connect(
        f"{path.resolve().as_uri()}?mode={'rwc' if create else 'rw'}",
        uri=True,
        timeout=busy_timeout_s,
        isolation_level=None,
        check_same_thread=False,
    )


@contextmanager
def transaction(
    conn: sqlite3.Connection, lock: threading.RLock, mode: str = "IMMEDIATE"
) -> Iterator[sqlite3.Connection]:
    with lock:
        conn.execute(f"BEGIN {mode}")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise


def prepare_schema(
    conn: sqlite3.Connection,
    *,
    schema: str,
    version: int,
    tables: frozenset[str],
    create: bool,
    kind: str,
) -> str | None:
    """Create the schema in an empty file, or check the file's tables and version.

    Run inside a transaction. Returns None when the file is ready, else why it is not ours
    (the caller raises its own error with it).
    """
    found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    found.discard("sqlite_sequence")
    if not found and create:
        for statement in schema.split(";"):  # not executescript: it would COMMIT first
            if statement.strip():
                conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        return None
    if not tables <= found:
        return f"not a redflags {kind} database"
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    if versions != [version]:
        return f"{kind} database schema version {versions}, this redflags reads version {version}"
    return None


def prepare_versioned(
    conn: sqlite3.Connection,
    *,
    schema: str,
    tables: frozenset[str],
    migrations: dict[int, tuple[str, ...]],
    create: bool,
    kind: str,
) -> tuple[str | None, int | None]:
    """``prepare_schema`` for a schema that grows by forward-only migrations.

    ``schema``/``tables`` are version 1; ``migrations[n]`` turns version n - 1 into n. A new file
    is made at version 1 and migrated like an old one (one history, no second definition to
    drift). Run inside a write transaction: a step that fails leaves the file as it was. Returns
    (why the file is not ours or None, the version it had when it needed migrating or None).
    """
    latest = max(migrations, default=1)
    found = _stored_version(conn)
    start = 1 if found is None else (found if 1 <= found <= latest else latest)
    wrong = prepare_schema(conn, schema=schema, version=start, tables=tables, create=create, kind=kind)
    if wrong:
        return wrong, None
    for target in range(start + 1, latest + 1):
        for statement in migrations[target]:
            conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = ?", (target,))
    return None, (found if found is not None and found < latest else None)


def _stored_version(conn: sqlite3.Connection) -> int | None:
    """The file's one schema version, or None (no such table, or not one integer row)."""
    found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in found:
        return None
    rows = conn.execute("SELECT version FROM schema_version").fetchall()
    return rows[0][0] if len(rows) == 1 and isinstance(rows[0][0], int) else None
