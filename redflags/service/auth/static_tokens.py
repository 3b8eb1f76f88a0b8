"""Static bearer tokens for server-to-server ``$evaluate`` (``redflags serve --tokens FILE``).

FILE holds one token per line (blank lines and ``#`` comments ignored), optionally after a name
and a space (``lab-engine TOKEN``): the name is the caller's tenant (whose history and alerts it
reads and writes), so it must stay with its token; an unnamed token is ``token-line-N`` and its
tenant follows its line (moving lines moves data: name every token). Tokens are kept only
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
#: A token's name: the tenant of its caller (no ``|``, which separates a CDS tenant's parts).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TokensError(ValueError):
    """The tokens file is unusable; one line, never containing a token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticTokens:
    def __init__(self, entries: list[tuple[int, bytes]], names: dict[int, str] | None = None) -> None:
        self._entries = entries  # (line number, digest)
        self._names = names or {}  # line number -> the name given on that line

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, token: str) -> str | None:
        """The matching token's name, else a label naming its line (``token-line-N``), or None;
        same work either way."""
        presented = _digest(token)
        found: int | None = None
        for line, digest in self._entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = line
        return None if found is None else self._names.get(found, f"token-line-{found}")

    @classmethod
    def from_file(cls, path: Path) -> StaticTokens:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TokensError(f"{path}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise TokensError(f"{path}: not UTF-8 text") from None
        entries: list[tuple[int, bytes]] = []
        names: dict[int, str] = {}
        for n, raw in enumerate(text.splitlines(), start=1):
            token = raw.strip()
            if not token or token.startswith("#"):
                continue
            name, _, rest = token.replace("\t", " ").partition(" ")
            if rest.strip():
                if not NAME_RE.fullmatch(name) or name.startswith("token-line-"):
                    raise TokensError(f"{path}: line {n}: a name is 1-64 letters, digits, '.', '_' or '-'")
                if name in names.values():
                    raise TokensError(f"{path}: line {n}: the name of an earlier line")  # not echoed
                names[n], token = name, rest.strip()
            if not TOKEN_RE.fullmatch(token):
                raise TokensError(f"{path}: line {n} is not a bearer token (RFC 6750 characters, no spaces)")
            if len(token) < MIN_LENGTH:
                raise TokensError(f"{path}: line {n}: token shorter than {MIN_LENGTH} characters")
            entries.append((n, _digest(token)))
        if not entries:
            raise TokensError(f"{path}: no tokens")
        return cls(entries, names)
