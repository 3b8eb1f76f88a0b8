"""An on-disk index of context resources that name no patient, for the bulk replay's join.

A Bulk Data export writes each Medication (and sometimes an Encounter) on its own line with no
``subject``: no patient partition can hold it, yet a MedicationRequest in another file names its
drug by ``medicationReference`` to it. Keeping every such resource in memory until all inputs
are read would make memory grow with the export, so during the spill they go to a SQLite file
in the replay's private folder (``Type/id`` and fullUrl -> the spill record), together with the
context references the patients' resources make. At evaluation each patient's references are
looked up there (read-only: ``--jobs`` workers open it themselves) and joined by the same rule
as within one input (``fhir_adapters.intake.join_context``).

Count semantics: a resource naming no patient that no patient's resource references (by any of
its keys, from any input) is counted with the "resources naming no patient"; one referenced is
joined to every patient referencing it and counted among the resources read.
"""

from __future__ import annotations

import errno
import sqlite3
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

#: Rows buffered before one ``executemany`` (bounded memory; few round trips).
_FLUSH = 4096
#: Indexes are kept up as rows arrive (no final sort: SQLite would spill a large sort to the
#: system's temporary folder, not the replay's --tmp-dir); references are stored once each.
_SCHEMA = (
    "CREATE TABLE ctx (id INTEGER PRIMARY KEY, type TEXT NOT NULL, src INTEGER NOT NULL, body BLOB NOT NULL)",
    "CREATE TABLE ctx_key (key TEXT NOT NULL, id INTEGER NOT NULL, PRIMARY KEY (key, id)) WITHOUT ROWID",
    "CREATE INDEX ctx_key_id ON ctx_key (id)",
    "CREATE TABLE refs (key TEXT PRIMARY KEY) WITHOUT ROWID",
)
#: Per type, the indexed resources no reference names (by any of their keys).
_UNREFERENCED = """
SELECT type, COUNT(*) FROM ctx WHERE NOT EXISTS (
    SELECT 1 FROM ctx_key k JOIN refs r ON r.key = k.key WHERE k.id = ctx.id
) GROUP BY type
"""


class IndexFull(OSError):
    """The index could not be written (full disk): the replay stops with one line."""


def _failed(exc: sqlite3.Error) -> OSError:
    full = "full" in str(exc).lower()
    return IndexFull(errno.ENOSPC if full else errno.EIO, str(exc))


class ContextWriter:
    """Filled during the spill; ``close`` builds the indexes and returns what nothing referenced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0  # context resources naming no patient, indexed
        self._ctx: list[tuple[int, str, int, bytes]] = []
        self._keys: list[tuple[str, int]] = []
        self._refs: list[tuple[str]] = []
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("BEGIN")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise _failed(exc) from None

    def add(self, rtype: str, src: int, keys: Iterable[str], body: bytes) -> None:
        """One context resource naming no patient: its spill body, found by each of ``keys``."""
        self.rows += 1
        self._ctx.append((self.rows, rtype, src, body))
        self._keys.extend((key, self.rows) for key in keys)
        if len(self._ctx) >= _FLUSH:
            self._flush()

    def referenced(self, keys: Iterable[str]) -> None:
        """A patient's resource references its context by one of ``keys``."""
        self._refs.extend((key,) for key in keys)
        if len(self._refs) >= _FLUSH:
            self._flush()

    def _flush(self) -> None:
        try:
            self._db.executemany("INSERT INTO ctx VALUES (?, ?, ?, ?)", self._ctx)
            self._db.executemany("INSERT OR IGNORE INTO ctx_key VALUES (?, ?)", self._keys)
            self._db.executemany("INSERT OR IGNORE INTO refs VALUES (?)", self._refs)
        except sqlite3.Error as exc:
            raise _failed(exc) from None
        self._ctx, self._keys, self._refs = [], [], []

    def close(self) -> tuple[Counter[str], int]:
        """(unreferenced per type, referenced count); the file is removed when it holds nothing."""
        try:
            self._flush()
            unreferenced: Counter[str] = Counter()
            if self.rows:
                unreferenced.update(dict(self._db.execute(_UNREFERENCED).fetchall()))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _failed(exc) from None
        finally:
            self._db.close()
        if not self.rows:
            self.path.unlink(missing_ok=True)
        return unreferenced, self.rows - sum(unreferenced.values())

    def abort(self) -> None:
        """On error: the connection closed (the private folder removes the file)."""
        self._db.close()


class ContextReader:
    """Read-only lookups at evaluation (one per process: a ``--jobs`` worker opens its own)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        self.joined: set[int] = set()  # rows joined to a patient (the Spark path counts with them)

    def find(self, keys: Iterable[str]) -> list[tuple[int, int, bytes]]:
        """(row id, input index, spill body) of the resources filed under any of ``keys``."""
        wanted = sorted(set(keys))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        query = (
            "SELECT DISTINCT ctx.id, ctx.src, ctx.body FROM ctx_key JOIN ctx ON ctx.id = ctx_key.id "
            f"WHERE ctx_key.key IN ({marks}) ORDER BY ctx.id"
        )
        return self._db.execute(query, wanted).fetchall()

    def close(self) -> None:
        self._db.close()


def rows(path: Path) -> list[tuple[int, str, int, list[str], bytes]]:
    """Every indexed resource: (row, type, input index, keys, spill body); to ship the index."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        keys: dict[int, list[str]] = {}
        for key, row in db.execute("SELECT key, id FROM ctx_key ORDER BY id, key"):
            keys.setdefault(row, []).append(key)
        return [(r, t, s, keys.get(r, []), b) for r, t, s, b in db.execute("SELECT * FROM ctx ORDER BY id")]
    finally:
        db.close()
