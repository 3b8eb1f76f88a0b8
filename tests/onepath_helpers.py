"""What the one-path tests run inside engine processes (module level: the pool sends it by name)."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import orjson

from redflags.service.engine_host import start_engine

#: File each engine process appends the digest of every ``orjson.loads`` input to (one per line).
DECODES_ENV = "REDFLAGS_TEST_DECODES"


def digest(data: Any) -> str:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return hashlib.sha256(raw).hexdigest()


def counting_start(*args: Any) -> dict[str, object]:
    """``engine_host.start_engine`` in a process whose every JSON decode is written down."""
    loads, path = orjson.loads, os.environ[DECODES_ENV]

    def counted(data: Any) -> Any:
        with open(path, "a", encoding="ascii") as f:
            f.write(digest(data) + "\n")
        return loads(data)

    orjson.loads = counted  # type: ignore[assignment]
    return start_engine(*args)
