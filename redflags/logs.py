"""structlog JSON logs on stderr; every line carries the run's id (replay or request id).

Patient identifiers never enter a log line: code logs counts, rule ids and a per-process
pseudonym of the patient (``patient_token``) so lines of one patient can still be joined.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from typing import TextIO

import structlog

_SALT = os.urandom(16)


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


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        # one write per line: the service's engine processes share the HTTP process's stderr
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
