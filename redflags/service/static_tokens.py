"""Static bearer tokens for server-to-server ``$evaluate`` (``redflags serve --tokens FILE``).

FILE holds one token per line (blank lines and ``#`` comments ignored). Tokens are kept only
as SHA-256 digests and compared in constant time against every listed token, so neither the
comparison nor an early exit tells a caller how close a guess was. A token is never logged and
never echoed in an error: problems in the file are reported by line number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

#: RFC 6750 b64token: what may follow "Bearer " in an Authorization header.
TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MIN_LENGTH = 16


class TokensError(ValueError):
    """The tokens file is unusable; one line, never containing a token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticTokens:
    def __init__(self, entries: list[tuple[int, bytes]]) -> None:
        self._entries = entries  # (line number, digest)

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, token: str) -> str | None:
        """A label naming the matching line (``token-line-N``), or None; same work either way."""
        presented = _digest(token)
        found: int | None = None
        for line, digest in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = line
        return None if found is None else f"token-line-{found}"

    @classmethod
    def from_file(cls, path: Path) -> StaticTokens:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokensError(f"{path}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise TokensError(f"{path}: not UTF-8 text") from None
        entries: list[tuple[int, bytes]] = []
        for n, raw in enumerate(text.splitlines(), start=1):
            token = raw.strip()
            if not token or token.startswith("#"):
                continue
            if not TOKEN_RE.fullmatch(token):
                raise TokensError(f"{path}: line {n} is not a bearer token (RFC 6750 characters, no spaces)")
            if len(token) < MIN_LENGTH:
                raise TokensError(f"{path}: line {n}: token shorter than {MIN_LENGTH} characters")
            entries.append((n, _digest(token)))
        if not entries:
            raise TokensError(f"{path}: no tokens")
        return cls(entries)
