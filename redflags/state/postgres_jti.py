"""The networked ``JtiStore``: a token id seen by any replica is refused by every other.

One atomic upsert per token, as ``jti.SqliteJtiStore`` (its docstring says how long an id is
kept): the insert of a new id, or the take-over of an expired one, changes one row; a live id
changes none. Two replicas inserting one id at once: the primary key makes one of them wait
for the other's commit and then find it live.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from redflags.state.jti import JtiStoreError
from redflags.state.location import DatabaseRefused
from redflags.state.model import StoreUnavailable
from redflags.state.postgres_db import Database, Schema

SCHEMA = Schema(
    kind="jti",
    migrations={
        1: (
            "CREATE TABLE seen_jti (iss TEXT NOT NULL, jti TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL, "
            "PRIMARY KEY (iss, jti))",
            "CREATE INDEX seen_jti_expires ON seen_jti (expires)",
        ),
    },
)


class JtiStoreUnavailable(JtiStoreError, StoreUnavailable):
    """The jti store's database is unreachable for now: the call is refused with a 503."""


class JtiDatabaseRefused(DatabaseRefused, JtiStoreError):
    """The database refused the jti store's login (wrong password, no such role or database)."""


class PostgresJtiStore:
    PURGE_EVERY_S = 60.0

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self.path = db.where
        self._purged = 0.0
        self._lock = threading.Lock()

    @classmethod
    def open(cls, url: str, clock: Callable[[], float] = time.time, *, max_size: int = 4) -> PostgresJtiStore:
        db = Database(
            url, "jti", JtiStoreError, JtiStoreUnavailable, max_size=max_size, refused=JtiDatabaseRefused
        )
        db.open(SCHEMA)
        return cls(db, clock)

    def first_use(self, iss: str, jti: str, expires: float) -> bool:
        now = self._clock()
        with self._lock:
            purge = now - self._purged >= self.PURGE_EVERY_S
            if purge:
                self._purged = now
        with self._db.connection("jti check") as conn:
            if purge:
                conn.execute("DELETE FROM seen_jti WHERE expires < %s", (now,))
            changed = conn.execute(
                "INSERT INTO seen_jti (iss, jti, expires) VALUES (%s, %s, %s)"
                " ON CONFLICT (iss, jti) DO UPDATE SET expires = excluded.expires"
                " WHERE seen_jti.expires < %s",
                (iss, jti, expires, now),
            ).rowcount
        return changed == 1

    def purge(self) -> int:
        now = self._clock()
        with self._db.connection("jti purge") as conn:
            return conn.execute("DELETE FROM seen_jti WHERE expires < %s", (now,)).rowcount

    def __len__(self) -> int:
        with self._db.connection("jti count") as conn:
            row = conn.execute("SELECT count(*) FROM seen_jti").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._db.close()
