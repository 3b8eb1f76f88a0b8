"""Where redflags keeps what it remembers, and the one call that opens all of it.

A *location* is one place for the three stores of a site: the state store (history, alert
ledger, outbox), the feedback store (cards shown, what clinicians did) and the jti store
(JWT ids already used). Today a location is the state file: the other two are files beside
it (``redflags-feedback.sqlite``, ``redflags-jti.sqlite``) unless named one by one. Without
one, ``redflags serve`` uses ``default_folder()`` (the user's state directory, never the
working directory).

Three files in one folder rather than one file with three sets of tables, because SQLite has
one writer per file: the jti store writes on every authenticated call and the feedback store
on every call that shows a card; in one file each would queue behind every evaluation's
commit. The three also differ in durability (jti and state: fsync per commit; shown cards:
not). And the files of the release before this one open as they are, nothing is moved (old
schemas are migrated forward in place, ``sqlite_file``). A ``postgresql://`` URL (issue 14)
keeps all three in that one database, shared by every host (``postgres_*``); any other URL is
refused, never taken for a file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from redflags.state import sqlite_file
from redflags.state.feedback import KEEP_S, SqliteFeedbackStore
from redflags.state.jti import JtiStoreError, SqliteJtiStore
from redflags.state.location import (
    FEEDBACK_FILE,
    JTI_FILE,
    STATE_FILE,
    DatabaseRefused,
    StorePaths,
    UnsupportedLocation,
    check_location,
    default_folder,
    is_database_url,
    looks_like_url,
    redact,
)
from redflags.state.model import (
    FeedbackStore,
    FeedbackStoreError,
    JtiStore,
    StateStore,
    StateStoreError,
    StateStoreUnavailable,
    StoreUnavailable,
)
from redflags.state.sqlite_store import SqliteStateStore

if TYPE_CHECKING:
    from redflags.state.postgres_feedback import PostgresFeedbackStore

__all__ = [
    "FEEDBACK_FILE",
    "JTI_FILE",
    "STATE_FILE",
    "StorePaths",
    "Stores",
    "UnsupportedLocation",
    "check_location",
    "default_folder",
    "is_database_url",
    "looks_like_url",
    "open_feedback",
    "open_jti",
    "open_state",
    "open_stores",
    "redact",
]


@dataclass(slots=True)
class Stores:
    """The three stores of one location, open (``state`` None: a service keeping no history)."""

    state: StateStore | None
    feedback: FeedbackStore
    jti: JtiStore
    paths: StorePaths

    def close(self) -> None:
        for store in (self.state, self.feedback, self.jti):
            close = getattr(store, "close", None)
            if close is not None:
                close()


def open_state(path: str | Path, *, create: bool = True) -> StateStore:
    """The state store at ``path``: a SQLite file, or the database of a ``postgresql://`` URL."""
    check_location(path, "state store")
    if is_database_url(path):
        from redflags.state.postgres_state import PostgresStateStore  # psycopg only for a URL

        return PostgresStateStore.open(str(path))
    return SqliteStateStore.open(path, create=create)


def open_feedback(path: str | Path, *, create: bool = True, keep_s: int = KEEP_S) -> FeedbackStore:
    """The feedback store at ``path`` (file or database URL), keeping shown cards ``keep_s`` seconds."""
    check_location(path, "feedback store")
    store: SqliteFeedbackStore | PostgresFeedbackStore
    if is_database_url(path):
        from redflags.state.postgres_feedback import PostgresFeedbackStore

        store = PostgresFeedbackStore.open(str(path))
    else:
        store = SqliteFeedbackStore.open(path, create=create)
    store.keep_s = keep_s
    return store


def open_jti(path: str | Path) -> JtiStore:
    check_location(path, "jti store")
    if is_database_url(path):
        from redflags.state.postgres_jti import PostgresJtiStore

        return PostgresJtiStore.open(str(path))
    return SqliteJtiStore(Path(path))


def open_stores(location: str | Path | StorePaths | None = None, *, stateless: bool = False) -> Stores:
    """Open (creating what is missing) the three stores of ``location``: a ``StorePaths``, a
    state file (the others beside it), a database URL (all three in it) or None
    (``default_folder()``, made owner-only).

    Anything wrong is one ``StateStoreError`` line (a URL of another kind:
    ``UnsupportedLocation``; a database that refuses the login: ``DatabaseRefused``; one that
    cannot be reached: ``StateStoreUnavailable``);
    nothing stays open when one of the three fails.
    """
    paths = location if isinstance(location, StorePaths) else StorePaths.resolve(location)
    for where in {paths.state, paths.feedback, paths.jti}:
        if isinstance(where, Path):
            sqlite_file.make_folder(where.parent)
    opened: list[object] = []
    try:
        state = None if stateless else open_state(paths.state)
        opened.append(state)
        feedback = open_feedback(paths.feedback)
        opened.append(feedback)
        jti = open_jti(paths.jti)
    except (FeedbackStoreError, JtiStoreError) as exc:
        for store in opened:
            getattr(store, "close", lambda: None)()
        kinds = ((DatabaseRefused, DatabaseRefused), (StoreUnavailable, StateStoreUnavailable))
        kind = next((ours for theirs, ours in kinds if isinstance(exc, theirs)), StateStoreError)
        raise kind(" ".join(str(exc).split())) from None
    except StateStoreError:
        for store in opened:
            getattr(store, "close", lambda: None)()
        raise
    return Stores(state=state, feedback=feedback, jti=jti, paths=paths)
