"""Where a site's stores are: one location, its three files, and what is not a location (a URL).

``redflags.state.stores`` opens them; this module only names them (a leaf: every store module
may import it to refuse a URL before SQLite would take it for a file name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from platformdirs import user_state_path

from redflags.state.model import StateStoreError

STATE_FILE = "redflags-state.sqlite"
JTI_FILE = "redflags-jti.sqlite"
FEEDBACK_FILE = "redflags-feedback.sqlite"
#: ``scheme://``: what a location that is not a file looks like (RFC 3986 scheme).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class UnsupportedLocation(StateStoreError):
    """A store location this version cannot open (a URL): one line."""


def looks_like_url(text: str | Path) -> bool:
    return isinstance(text, str) and _URL.match(text) is not None


def check_location(text: str | Path, what: str = "store") -> None:
    """Refuse a URL before anything could take it for a file name (and create ``postgresql:/``)."""
    if looks_like_url(text):
        scheme = str(text).split(":", 1)[0]
        raise UnsupportedLocation(
            f"{what} {str(text).split('@')[-1]!r}: a {scheme}:// URL; this redflags keeps its "
            "stores in SQLite files (give a file path)"
        )


def default_folder() -> Path:
    """The user's state directory for redflags: ``$XDG_STATE_HOME/redflags`` (by default
    ``~/.local/state/redflags``) on Linux, the platform's equivalent elsewhere."""
    return user_state_path("redflags", appauthor=False)


@dataclass(frozen=True, slots=True)
class StorePaths:
    """The three files of one location."""

    state: Path
    feedback: Path
    jti: Path

    @classmethod
    def resolve(
        cls,
        state: str | Path | None = None,
        feedback: str | Path | None = None,
        jti: str | Path | None = None,
        *,
        folder: Path | None = None,
    ) -> StorePaths:
        """Each file as named, else beside the state file; the state file as named, else in
        ``folder`` (default ``default_folder()``). URLs are refused (``UnsupportedLocation``)."""
        for text, what in ((state, "state store"), (feedback, "feedback store"), (jti, "jti store")):
            if text is not None:
                check_location(text, what)
        state_path = Path(state) if state is not None else (folder or default_folder()) / STATE_FILE
        beside = state_path.parent
        return cls(
            state=state_path,
            feedback=Path(feedback) if feedback is not None else beside / FEEDBACK_FILE,
            jti=Path(jti) if jti is not None else beside / JTI_FILE,
        )
