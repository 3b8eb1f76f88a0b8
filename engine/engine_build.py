"""The durable-rules build the engine runs on: upstream 2.0.28 plus redflags' patch set N.

durable-rules 2.0.28 is unmaintained and has known defects; redflags builds it from the released
source with its own patches (engine/durable_patches/, scripts/build_engine.py) as version
``2.0.28+redflags.N``. ``engine`` checks that build at import, so an unpatched or older install
stops with one message instead of running quietly. Standard library only: the build script reads
this file before anything else is installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from functools import cache
from pathlib import Path

UPSTREAM_VERSION = "2.0.28"
#: sha256 of durable_rules-2.0.28.tar.gz on the package index, checked before every build
UPSTREAM_SDIST_SHA256 = "053b26f5e48d312d4fa27995243f954671be6eece477f150c059c364eb4d7d61"
#: the patch set's number and digest (``patch_set_digest``): a change to engine/durable_patches/
#: changes the digest (tests/test_engine_build_installed.py says the new one); record it and bump
#: the number with it, and pyproject's pin, so one version always names one engine
PATCH_SET = 3
PATCH_SET_DIGEST = "3459a91de7bb247136fa0160d100ee872d8f239e1b29fc71126ec65b64f0a930"
BUILD_VERSION = f"{UPSTREAM_VERSION}+redflags.{PATCH_SET}"
PATCH_GLOB = "[0-9][0-9][0-9][0-9]-*.patch"
#: an installed durable-rules' metadata directory, as importlib.metadata normalises the name
_DIST_INFO = re.compile(r"durable[-_.]+rules(-[^-]*)?\.(dist|egg)-info", re.IGNORECASE)


def patch_files(patch_dir: Path) -> list[Path]:
    """The patch set in the order it is applied (``NNNN-name.patch``, by number)."""
    return sorted(patch_dir.glob(PATCH_GLOB))


def patch_set_digest(patch_dir: Path) -> str:
    """What a build depends on: the upstream source and every patch (name and bytes), in order."""
    digest = hashlib.sha256(UPSTREAM_SDIST_SHA256.encode())
    for patch in patch_files(patch_dir):
        digest.update(b"\0" + patch.name.encode() + b"\0" + patch.read_bytes())
    return digest.hexdigest()


def installed_engine_version() -> str | None:
    """The installed durable-rules version, None when it is not installed.

    Found where importlib.metadata finds it (the first durable_rules-*.dist-info on sys.path)
    without importing it: that import is ~10 ms of every start-up (``import engine`` checks the
    build). Anything but one plain dist-info directory is left to importlib.metadata.
    """
    for entry in sys.path:
        try:
            found = [name for name in os.listdir(entry or ".") if _DIST_INFO.fullmatch(name)]
        except OSError:  # a zip archive (importlib.metadata reads those) or no directory at all
            if os.path.isfile(entry):
                return _metadata_version()
            continue
        if found:
            plain = len(found) == 1 and found[0].lower().endswith(".dist-info")
            return _version_line(Path(entry or ".", found[0], "METADATA")) if plain else _metadata_version()
    return None


def _version_line(metadata: Path) -> str | None:
    """The ``Version:`` header of a dist-info's METADATA (importlib.metadata's answer if none)."""
    try:
        with metadata.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip()
                if not line.strip():  # the headers end at the first empty line
                    break
    except OSError:
        pass
    return _metadata_version()


def _metadata_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("durable-rules")
    except PackageNotFoundError:
        return None


@cache
def require_patched_engine() -> str:
    """The installed engine build, or exit with one line saying how to get the right one."""
    found = installed_engine_version()
    if found == BUILD_VERSION:
        return found
    what = "is not installed" if found is None else f"{found} is not the redflags build"
    raise SystemExit(f"durable-rules {what} ({BUILD_VERSION}); run scripts/bootstrap")
