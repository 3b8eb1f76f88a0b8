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
schemas are migrated forward in place, ``sqlite_file``). A networked database (issue 14)
keeps all three in one database named by one URL; until then a URL is refused, never taken
for a file name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from redflags.state import sqlite_file
from redflags.state.feedback import KEEP_S, SqliteFeedbackStore
from redflags.state.jti import JtiStoreError, SqliteJtiStore
from redflags.state.location import (
    FEEDBACK_FILE,
    JTI_FILE,
    STATE_FILE,
    StorePaths,
    UnsupportedLocation,
    check_location,
    default_folder,
    looks_like_url,
)
from redflags.state.model import FeedbackStore, FeedbackStoreError, JtiStore, StateStore, StateStoreError
from redflags.state.sqlite_store import SqliteStateStore

__all__ = [
    "FEEDBACK_FILE",
    "JTI_FILE",
    "STATE_FILE",
    "StorePaths",
    "Stores",
    "UnsupportedLocation",
    "check_location",
    "default_folder",
    "looks_like_url",
    "open_feedback",
    "open_jti",
    "open_state",
    "open_stores",
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
    """The state store at ``path`` (the SQLite one; a URL is refused)."""
    check_location(path, "state store")
    return SqliteStateStore.open(path, create=create)


def open_feedback(path: str | Path, *, create: bool = True, keep_s: int = KEEP_S) -> FeedbackStore:
    """The feedback store at ``path``, keeping shown cards ``keep_s`` seconds."""
    check_location(path, "feedback store")
    store = SqliteFeedbackStore.open(path, create=create)
    store.keep_s = keep_s
    return store


def open_jti(path: str | Path) -> JtiStore:
    check_location(path, "jti store")
    return SqliteJtiStore(Path(path))


def open_stores(location: str | Path | StorePaths | None = None, *, stateless: bool = False) -> Stores:
    """Open (creating what is missing) the three stores of ``location``: a ``StorePaths``, a
    state file (the others beside it) or None (``default_folder()``, made owner-only).

    Anything wrong is one ``StateStoreError`` line (a URL: ``UnsupportedLocation``); nothing
    stays open when one of the three fails.
    """
    paths = location if isinstance(location, StorePaths) else StorePaths.resolve(location)
    for folder in {paths.state.parent, paths.feedback.parent, paths.jti.parent}:
        sqlite_file.make_folder(folder)
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
        raise StateStoreError(" ".join(str(exc).split())) from None
    except StateStoreError:
        for store in opened:
            getattr(store, "close", lambda: None)()
        raise
    return Stores(state=state, feedback=feedback, jti=jti, paths=paths)
