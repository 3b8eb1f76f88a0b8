"""How redflags opens its SQLite files (state, feedback, jti): shared by processes, checked on open.

One helper for the three stores (``open_versioned``), so they agree on everything but their
tables: a new file is made owner-only (0600, in a folder made 0700: it holds patient data or
token ids), ``synchronous=FULL`` (a commit that returned survives a power cut), a busy timeout
(writers queue instead of failing), the schema created or checked and migrated forward in one
IMMEDIATE transaction, then WAL (readers never block the writer). A file that is not the
store's own kind, or of a newer version, is refused before anything is changed in it.

Each store keeps one connection guarded by a lock and begins its own transactions: IMMEDIATE
for writes (the write lock up front, waiting up to the busy timeout), DEFERRED for reads (one
consistent snapshot that never blocks writers).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

#: Modes of what a store creates: its files hold patient data or token ids, for the owner only.
FILE_MODE = 0o600
FOLDER_MODE = 0o700


class NotOurs(Exception):
    """The file is not the store's kind, or of a version this code does not read (one line)."""


class CannotOpen(Exception):
    """The file cannot be opened or created at all (a folder, no permission): one line."""


@dataclass(frozen=True, slots=True)
class Schema:
    """A store's tables: version 1 and the forward-only steps from there.

    ``migrations[n]`` turns version n - 1 into n; ``tables`` are version 1's, ``final_tables``
    what every file must have after migrating; ``unversioned`` the tables of a file written
    before the store had a version row (adopted as version 1, whose schema it is).
    """

    kind: str
    v1: str
    tables: frozenset[str]
    migrations: Mapping[int, tuple[str, ...]]
    final_tables: frozenset[str] = frozenset()
    unversioned: frozenset[str] = frozenset()

    @property
    def version(self) -> int:
        return max(self.migrations, default=1)


def open_versioned(
    path: Path, schema: Schema, *, create: bool, busy_timeout_s: float
) -> tuple[sqlite3.Connection, int | None]:
    """Connect, check or create (and migrate) the schema, switch to WAL; the connection and the
    version the file had when it was migrated (None: not migrated).

    ``CannotOpen`` when there is no file to open, ``NotOurs`` when it is another kind or
    version, ``sqlite3.Error`` when it cannot be read (the caller words each as its own error).
    """
    try:
        conn = connect(path, create=create, busy_timeout_s=busy_timeout_s)
    except (OSError, sqlite3.Error) as exc:
        raise CannotOpen(" ".join(str(exc).split()) or type(exc).__name__) from None
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA user_version").fetchone()  # reads the header: "not a database" here
        with transaction(conn, threading.RLock(), "IMMEDIATE"):
            _adopt_unversioned(conn, schema.unversioned)
            wrong, migrated = prepare_versioned(
                conn,
                schema=schema.v1,
                tables=schema.tables,
                migrations=dict(schema.migrations),
                create=create,
                kind=schema.kind,
            )
            if wrong:
                raise NotOurs(wrong)
            if not schema.final_tables <= _table_names(conn):
                raise NotOurs(f"not a redflags {schema.kind} database")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise NotOurs(f"cannot switch the {schema.kind} database to WAL (mode {mode})")
    except BaseException:
        conn.close()
        raise
    return conn, migrated


def make_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) if missing; the folder itself owner-only."""
    if not folder.is_dir():
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)


def connect(path: Path, *, create: bool, busy_timeout_s: float) -> sqlite3.Connection:
    """``mode=rw`` never creates a file, ``rwc`` does (owner-only, see ``FILE_MODE``: SQLite gives
    its -wal and -shm files the same mode); isolation_level=None: we BEGIN ourselves;
    check_same_thread=False: the store's lock guards the connection."""
    if create:
        make_folder(path.parent)
        with suppress(FileExistsError):  # an empty file is an empty database
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
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


def _adopt_unversioned(conn: sqlite3.Connection, tables: frozenset[str]) -> None:
    """A file of the release before versioning (exactly ``tables``) gets its version row: 1."""
    if tables and _table_names(conn) == tables:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")


def _table_names(conn: sqlite3.Connection) -> set[str]:
    found = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    found.discard("sqlite_sequence")
    return found


def _stored_version(conn: sqlite3.Connection) -> int | None:
    """The file's one schema version, or None (no such table, or not one integer row)."""
    if "schema_version" not in _table_names(conn):
        return None
    rows = conn.execute("SELECT version FROM schema_version").fetchall()
    return rows[0][0] if len(rows) == 1 and isinstance(rows[0][0], int) else None


def identity(path: Path) -> tuple[int, int]:
    """What names the file a store opened (device, inode): ``ping`` compares it with the path's now."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def ping(
    conn: sqlite3.Connection, lock: threading.Lock | threading.RLock, path: Path, opened: tuple[int, int]
) -> str | None:
    """Why the store cannot serve now (None: it can): the file gone, moved or replaced (writes
    would go to a file nobody reads again), or the connection closed or unreadable."""
    try:
        if identity(path) != opened:
            return f"{path}: the file was moved or replaced since the store opened it"
        with lock:
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except OSError as exc:
        return f"{path}: {exc.strerror or type(exc).__name__}"
    except sqlite3.Error as exc:
        return f"{path}: {' '.join(str(exc).split()) or type(exc).__name__}"
    return None
