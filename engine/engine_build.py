"""The durable-rules build the engine runs on: upstream 2.0.28 plus redflags' patch set N.

durable-rules 2.0.28 is unmaintained and has known defects; redflags builds it from the released
source with its own patches (engine/durable_patches/, scripts/build_engine.py) as version
``2.0.28+redflags.N``. ``engine`` checks that build at import, so an unpatched or older install
stops with one message instead of running quietly. Standard library only: the build script reads
this file before anything else is installed.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
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
    """The installed durable-rules version, None when it is not installed."""
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
