"""structlog JSON logs on stderr; every line carries the run's id (replay or request id).

On a terminal the same events are one readable line each (``warning: event (key=value)``):
a person reads them; files, pipes and log collectors get JSON. ``--log-format`` (or the
environment variable ``REDFLAGS_LOG_FORMAT``) overrides the choice: ``json`` keeps JSON on a
terminal (an operator's console feeding a collector), ``console`` forces readable lines.

Patient identifiers never enter a log line: code logs counts, rule ids and a per-process
pseudonym of the patient (``patient_token``) so lines of one patient can still be joined.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING, TextIO

from engine import logger

if TYPE_CHECKING:
    import structlog

_SALT = os.urandom(16)

#: Where the chosen log format lives: the environment, so the processes a command starts
#: (the service's engine processes, replay's --jobs workers) render the same way.
FORMAT_ENV = "REDFLAGS_LOG_FORMAT"
#: ``auto``: readable lines on a terminal, JSON otherwise; ``None``: decide by the stream.
FORMATS: dict[str, bool | None] = {"auto": None, "json": False, "console": True}


def salt() -> bytes:
    return _SALT


def share_salt(value: bytes) -> None:
    """Use another process's salt, so both give a patient the same token (engine processes)."""
    global _SALT
    _SALT = value


def patient_token(pid: str) -> str:
    """A pseudonym that is stable within this run and meaningless outside it.

    The service's engine processes take the HTTP process's salt (``share_salt``), so a
    patient has one token across them.
    """
    return hashlib.blake2b(pid.encode(), key=_SALT, digest_size=6).hexdigest()


def choose_format(name: str) -> None:
    """Make ``name`` (a key of ``FORMATS``) the log format of this process and its children."""
    if name not in FORMATS:
        raise ValueError(f"log format {name!r} is not one of {', '.join(FORMATS)}")
    if os.environ.get(FORMAT_ENV, "auto") != name:
        os.environ[FORMAT_ENV] = name


def readable(stream: TextIO | None = None) -> bool:
    """True when log lines on ``stream`` (default stderr) are rendered for a person, not as JSON.

    An unknown ``REDFLAGS_LOG_FORMAT`` counts as ``auto`` here; the command line refuses it.
    """
    chosen = FORMATS.get(os.environ.get(FORMAT_ENV, "auto").strip().lower())
    return (stream or sys.stderr).isatty() if chosen is None else chosen


def _told(events: frozenset[str]) -> structlog.types.Processor:
    def drop(_logger: object, _method: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
        if event.get("event") in events:
            from structlog import DropEvent  # loaded: this runs inside a log call

            raise DropEvent
        return event

    return drop


def _readable(_logger: object, _method: str, event: structlog.types.EventDict) -> str:
    """One line a person reads on a terminal: ``warning: event (key=value, ...)``, no run id."""
    level, name = event.pop("level", "info"), event.pop("event", "")
    for noise in ("timestamp", "replay_id", "request_id"):
        event.pop(noise, None)
    details = ", ".join(
        f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in event.items()
    )
    return f"{level}: {name}" + (f" ({details})" if details else "")


def configure(
    level: str = "info",
    stream: TextIO | None = None,
    *,
    console: bool | None = None,
    told: frozenset[str] = frozenset(),
) -> None:
    """JSON lines, or a readable line each (``console`` None: as ``readable(stream)`` decides).

    ``told``: events the command itself reports in words on a terminal (naming the file, which
    the engine cannot), left out of the console rendering only; JSON logs keep every event.
    Applied when the process first logs (engine/logger.py): a run that logs nothing never
    imports structlog; the stream and format are decided now all the same.
    """
    out = stream or sys.stderr
    for_a_person = readable(out) if console is None else console
    threshold = getattr(logging, level.upper())

    def apply(structlog: ModuleType) -> None:
        renderer: list[structlog.types.Processor] = (
            [_told(told), _readable] if for_a_person else [structlog.processors.JSONRenderer()]
        )
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                logger.merge_pending_context,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                *renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(threshold),
            # one write per line: the service's engine processes share the HTTP process's stderr
            logger_factory=structlog.WriteLoggerFactory(out),
            cache_logger_on_first_use=False,
        )

    logger.configure(apply, threshold)
