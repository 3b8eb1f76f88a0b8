"""Where a site's stores are: one location, its three files or one database URL, and what is
not a location (a URL of another kind).

``redflags.state.stores`` opens them; this module only names them (a leaf: every store module
may import it to refuse a URL before SQLite would take it for a file name).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from redflags.state.model import StateStoreError
from redflags.state.postgres_url import InvalidPoolSetting, split

STATE_FILE = "redflags-state.sqlite"
JTI_FILE = "redflags-jti.sqlite"
FEEDBACK_FILE = "redflags-feedback.sqlite"
#: ``scheme://``: what a location that is not a file looks like (RFC 3986 scheme).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


#: URL schemes of a database that holds every store of a site (``redflags.state.postgres_*``).
DATABASE_SCHEMES = ("postgresql", "postgres")
_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)


class UnsupportedLocation(StateStoreError):
    """A store location this version cannot open (a URL of another kind): one line."""


class DatabaseRefused(UnsupportedLocation):
    """The database named by a URL refused it for good: a wrong password, or no such role or
    database (fix the URL; calling again cannot help): one line, never the password."""


def looks_like_url(text: str | Path) -> bool:
    return isinstance(text, str) and _URL.match(text) is not None


def is_database_url(text: str | Path) -> bool:
    """A ``postgresql://`` (or ``postgres://``) URL: every store lives in that database."""
    return looks_like_url(text) and str(text).split(":", 1)[0].lower() in DATABASE_SCHEMES


def redact(url: str) -> str:
    """The URL with its password (``user:password@``, ``?password=``) replaced by ``***``."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))


def check_location(text: str | Path, what: str = "store") -> None:
    """Refuse a URL that is not a database URL before anything could take it for a file name
    (and create ``sqlite:/``); refuse a database URL whose ``pool_*`` parameters are wrong."""
    if is_database_url(text):
        check_database_url(str(text), what)
    elif looks_like_url(text):
        check_file(text, what)


def check_database_url(url: str, what: str = "store") -> None:
    """Refuse bad ``pool_*`` parameters (``postgres_url``) before anything connects."""
    try:
        split(url)
    except InvalidPoolSetting as exc:
        raise UnsupportedLocation(f"{what} {redact(url)!r}: {exc}") from None


def check_file(text: str | Path, what: str = "store") -> None:
    """Refuse every URL: for a store that can only be a file (``--feedback-db``, ``--jti-db``)."""
    if looks_like_url(text):
        scheme = str(text).split(":", 1)[0]
        supported = " or ".join(f"{s}://" for s in DATABASE_SCHEMES)
        raise UnsupportedLocation(
            f"{what} {redact(str(text))!r}: a {scheme}:// URL; give a file path, or a {supported} URL "
            "to --state"
        )


def default_folder() -> Path:
    """The user's state directory for redflags: ``$XDG_STATE_HOME/redflags`` (by default
    ``~/.local/state/redflags``) on Linux, the platform's equivalent elsewhere."""
    from platformdirs import user_state_path  # ~7 ms: imported only where a default is needed

    return user_state_path("redflags", appauthor=False)


@dataclass(frozen=True, slots=True)
class StorePaths:
    """The three files of one location, or one database URL (a ``str``) for all three."""

    state: Path | str
    feedback: Path | str
    jti: Path | str

    @property
    def database(self) -> str | None:
        """The database URL when the stores live in one (``--state postgresql://...``)."""
        return self.state if isinstance(self.state, str) else None

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
        ``folder`` (default ``default_folder()``). A database URL as state holds all three
        (naming a feedback or jti file as well is refused); other URLs are refused
        (``UnsupportedLocation``)."""
        if state is not None and is_database_url(state):
            for text, what in ((feedback, "--feedback-db"), (jti, "--jti-db")):
                if text is not None and text != state:
                    raise UnsupportedLocation(
                        f"{what} {redact(str(text))!r}: with a database URL as --state every store lives "
                        "in that database; drop it"
                    )
            url = str(state)
            check_database_url(url, "state store")
            return cls(state=url, feedback=url, jti=url)
        for text, what in ((state, "state store"), (feedback, "feedback store"), (jti, "jti store")):
            if text is not None:
                check_file(text, what)
        state_path = Path(state) if state is not None else (folder or default_folder()) / STATE_FILE
        beside = state_path.parent
        return cls(
            state=state_path,
            feedback=Path(feedback) if feedback is not None else beside / FEEDBACK_FILE,
            jti=Path(jti) if jti is not None else beside / JTI_FILE,
        )
