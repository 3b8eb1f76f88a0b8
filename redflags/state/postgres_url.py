"""What redflags itself reads from a ``postgresql://`` URL: the ``pool_*`` query parameters.

The operator sizes the connection pools where the database is named, once for every replica
and command (``--state`` or ``$REDFLAGS_STATE``): ``?pool_max=16&pool_min=2&pool_wait=5``.
These parameters are taken out of the URL before it reaches libpq (which refuses parameters
it does not know); every other parameter (``sslmode``, ``sslrootcert``, ``options``,
``application_name``, ...) is passed through as written. A bad value, or an unknown
``pool_...`` name (a typo would silently keep the default), is one line naming the parameter
(``InvalidPoolSetting``; the CLI exits 2). No psycopg here: ``location`` checks a URL with it.
The operator's page: ``docs/postgresql.md#pool-settings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import unquote

#: The prefix of redflags' own query parameters.
PREFIX = "pool_"


class InvalidPoolSetting(ValueError):
    """A ``pool_*`` parameter of a database URL that cannot be used: one line."""


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Pool sizes and wait of every store of one process; None: the store's default."""

    min_size: int | None = None
    max_size: int | None = None
    wait_s: float | None = None

    def sizes(self, default_max: int) -> tuple[int, int]:
        """(min, max) of a store whose own default maximum is ``default_max``."""
        most = self.max_size if self.max_size is not None else default_max
        least = self.min_size if self.min_size is not None else 1
        return min(least, most), most


def _whole(text: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ValueError(f"a whole number from {low} to {high}")
    return int(text)


def _seconds(text: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"seconds from {low:g} to {high:g}")
    return value


#: name -> (field, parse): every parameter redflags reads; ranges keep a typo from a runaway pool.
PARAMETERS = {
    "pool_min": ("min_size", lambda text: _whole(text, 0, 1000)),
    "pool_max": ("max_size", lambda text: _whole(text, 1, 1000)),
    "pool_wait": ("wait_s", lambda text: _seconds(text, 0.1, 300)),
}


def split(url: str) -> tuple[str, PoolSettings]:
    """The URL without its ``pool_*`` parameters (others kept byte for byte), and their values."""
    base, mark, query = url.partition("?")
    if not mark:
        return url, PoolSettings()
    fragment = ""
    if "#" in query:
        query, fragment = query.split("#", 1)
        fragment = "#" + fragment
    kept: list[str] = []
    found: dict[str, object] = {}
    for piece in query.split("&"):
        name, _eq, raw = piece.partition("=")
        name = unquote(name)
        if not name.lower().startswith(PREFIX):
            if piece:
                kept.append(piece)
            continue
        if name not in PARAMETERS:
            known = ", ".join(PARAMETERS)
            raise InvalidPoolSetting(f"unknown parameter {name!r} in the database URL (known: {known})")
        field, parse = PARAMETERS[name]
        if field in found:
            raise InvalidPoolSetting(f"{name} is given twice in the database URL")
        text = unquote(raw).strip()
        try:
            found[field] = parse(text)
        except ValueError as exc:
            raise InvalidPoolSetting(f"{name}={text[:40]!r} in the database URL: give {exc}") from None
    settings = PoolSettings(**found)  # type: ignore[arg-type]
    if (
        settings.min_size is not None
        and settings.max_size is not None
        and settings.min_size > settings.max_size
    ):
        raise InvalidPoolSetting(
            f"pool_min={settings.min_size} is above pool_max={settings.max_size} in the database URL"
        )
    rest = "&".join(kept)
    return base + ("?" + rest if rest else "") + fragment, settings


__all__ = ["PARAMETERS", "InvalidPoolSetting", "PoolSettings", "split"]
