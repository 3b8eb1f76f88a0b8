"""Seen JWT ids (``jti``), so a captured CDS client token cannot be replayed.

A token is remembered until it expires (its ``exp`` plus the clock leeway, at most the token
lifetime limit plus twice the leeway from now: ``client_jwt`` refuses longer-lived tokens);
after that its expiry check refuses it anyway, and the row is purged. Two stores share one
interface:

* ``SqliteJtiStore`` (what the service uses): one SQLite file, where the caller says
  (``redflags serve --jti-db``, by default beside the state store: ``redflags.state.stores``),
  opened like every store (``sqlite_file``: owner-only, schema versioned, migrated forward),
  shared by every worker process of ``redflags serve --workers N`` and kept across restarts,
  so a token replayed to another worker, or after a restart, is still refused. One small
  write per authenticated call, on disk before the call is accepted (WAL with
  ``synchronous=FULL``: with NORMAL a power loss or OS crash could forget the last ids while
  their tokens are still valid, and a captured token could then be replayed after the reboot).
* ``MemoryJtiStore``: per process. With several workers it would NOT catch a replay sent to
  a different worker; it is for tests and single-process embedding.
"""

from __future__ import annotations

import heapq
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from redflags.state import sqlite_file
from redflags.state.location import JTI_FILE
from redflags.state.model import JtiStore

__all__ = ["FILE_NAME", "SCHEMA_VERSION", "JtiStore", "JtiStoreError", "MemoryJtiStore", "SqliteJtiStore"]

#: The store's file name in a stores folder (``redflags.state.location``).
FILE_NAME = JTI_FILE

_TABLES = frozenset({"schema_version", "seen_jti"})
#: Version 1 is the table of the release before versioning (its files are adopted as version 1).
_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE seen_jti (iss TEXT NOT NULL, jti TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (iss, jti)) WITHOUT ROWID;
CREATE INDEX seen_jti_expires ON seen_jti (expires);
"""
_MIGRATIONS: dict[int, tuple[str, ...]] = {}  # version -> statements from version - 1
_SCHEMA_SPEC = sqlite_file.Schema(
    kind="jti", v1=_SCHEMA, tables=_TABLES, migrations=_MIGRATIONS, unversioned=frozenset({"seen_jti"})
)
SCHEMA_VERSION = _SCHEMA_SPEC.version


class JtiStoreError(sqlite3.Error):
    """The replay store cannot be opened: one line naming the file (an ``sqlite3.Error``, as
    callers of the release before it caught)."""


class MemoryJtiStore:
    """Per-process store (see the module docstring for why the service does not use it)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], float] = {}
        self._by_expiry: list[tuple[float, tuple[str, str]]] = []

    def first_use(self, iss: str, jti: str, expires: float) -> bool:
        with self._lock:
            now = self._clock()
            while self._by_expiry and self._by_expiry[0][0] < now:
                _, key = heapq.heappop(self._by_expiry)
                if self._seen.get(key, now) < now:
                    del self._seen[key]
            key = (iss, jti)
            if self._seen.get(key, -1.0) >= now:
                return False
            self._seen[key] = expires
            heapq.heappush(self._by_expiry, (expires, key))
            return True

    def __len__(self) -> int:
        return len(self._seen)


class SqliteJtiStore:
    """Store shared by all worker processes through one SQLite file (atomic upsert per token)."""

    PURGE_EVERY_S = 60.0

    def __init__(
        self, path: Path, clock: Callable[[], float] = time.time, *, busy_timeout_s: float = 10.0
    ) -> None:
        """Open (creating it if missing) the store at ``path``: the caller names it."""
        path = Path(path)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()  # one connection per process, used from worker threads
        try:
            self._db, _ = sqlite_file.open_versioned(
                path, _SCHEMA_SPEC, create=True, busy_timeout_s=busy_timeout_s
            )
        except (sqlite_file.CannotOpen, sqlite_file.NotOurs, sqlite3.Error) as exc:
            raise JtiStoreError(f"{path}: cannot open the jti store: {' '.join(str(exc).split())}") from None
        self._purged = 0.0

    def first_use(self, iss: str, jti: str, expires: float) -> bool:
        with self._lock:
            now = self._clock()
            if now - self._purged >= self.PURGE_EVERY_S:
                self._purge(now)
            # Inserts a new id, or takes over an expired one; a live one is left alone (0 changes).
            cursor = self._db.execute(
                "INSERT INTO seen_jti (iss, jti, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (iss, jti) DO UPDATE SET expires = excluded.expires"
                " WHERE seen_jti.expires < ?",
                (iss, jti, expires, now),
            )
            return cursor.rowcount == 1

    def purge(self) -> int:
        """Delete the expired ids now (``first_use`` does it at most every ``PURGE_EVERY_S``)."""
        with self._lock:
            return self._purge(self._clock())

    def _purge(self, now: float) -> int:
        self._purged = now
        return self._db.execute("DELETE FROM seen_jti WHERE expires < ?", (now,)).rowcount

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM seen_jti").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
