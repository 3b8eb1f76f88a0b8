"""Build redflags' durable-rules: the released 2.0.28 source plus engine/durable_patches, as a wheel.

Run with the interpreter the wheel is for (scripts/bootstrap runs it with the venv's python):

    python scripts/build_engine.py            # print the wheel's path (built unless cached)
    python scripts/build_engine.py --install  # and install it into this interpreter if needed

The source distribution is downloaded once from the package index and checked against the
sha256 pinned in engine/engine_build.py; the patches are applied in order (``patch --fuzz=0``: a
patch that no longer fits fails); the wheel is cached under build/durable-rules/ keyed by the
patch set's digest and the Python version, so changing a patch (or the interpreter) rebuilds.
The repository keeps only the patches, never upstream's sources. Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
PATCH_DIR = ROOT / "engine" / "durable_patches"
#: the build's own record inside the wheel (durable/_redflags_build.py): which patch set made it
STAMP = "durable/_redflags_build.py"


def _pins() -> ModuleType:
    """engine/engine_build.py loaded by path (importing ``engine`` would check the engine first)."""
    pins = ROOT / "engine" / "engine_build.py"
    spec = importlib.util.spec_from_file_location("_redflags_engine_build", pins)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _say(message: str) -> None:
    print(f"build_engine: {message}", file=sys.stderr)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(args: list[str], what: str, cwd: Path | None = None) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"build_engine: {what} failed:\n{done.stdout}{done.stderr}")


def source_distribution(pins: ModuleType, cache: Path) -> Path:
    """The verified upstream sdist, downloaded into the cache on first use."""
    name = f"durable_rules-{pins.UPSTREAM_VERSION}.tar.gz"
    sdist = cache / name
    if sdist.is_file() and _sha256(sdist) == pins.UPSTREAM_SDIST_SHA256:
        return sdist
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        _say(f"downloading the durable-rules {pins.UPSTREAM_VERSION} source distribution")
        requirement = f"durable-rules=={pins.UPSTREAM_VERSION}"
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
        _run([*pip, "--no-build-isolation", "-d", scratch, requirement], f"downloading {requirement}")
        got = Path(scratch) / name
        if not got.is_file() or _sha256(got) != pins.UPSTREAM_SDIST_SHA256:
            raise SystemExit(
                f"build_engine: {name} does not match the pinned sha256 {pins.UPSTREAM_SDIST_SHA256}"
            )
        os.replace(got, sdist)
    return sdist


def build_key(pins: ModuleType) -> str:
    """The cache folder of one build: version, interpreter and platform, patch-set digest."""
    tag = f"{sys.implementation.cache_tag}-{sysconfig.get_platform()}"
    return f"{pins.BUILD_VERSION}-{tag}-{pins.patch_set_digest(PATCH_DIR)[:16]}"


def _patched_tree(pins: ModuleType, sdist: Path, scratch: Path) -> Path:
    with tarfile.open(sdist) as archive:
        archive.extractall(scratch, filter="data")
    tree = scratch / f"durable_rules-{pins.UPSTREAM_VERSION}"
    for patch in pins.patch_files(PATCH_DIR):
        apply = ["patch", "-p1", "--batch", "--fuzz=0", "--no-backup-if-mismatch", "-i", str(patch)]
        _run(apply, f"applying {patch.name}", cwd=tree)
    (tree / "REDFLAGS_VERSION").write_text(pins.BUILD_VERSION + "\n")
    digest = pins.patch_set_digest(PATCH_DIR)
    (tree / "libpy" / STAMP).write_text(
        f'"""Written by redflags\' build step."""\nPATCH_SET = {pins.PATCH_SET}\nDIGEST = "{digest}"\n'
    )
    return tree


def build(cache: Path) -> Path:
    """The patched wheel for this interpreter: from the cache, or built now."""
    pins = _pins()
    folder = cache / build_key(pins)
    found = sorted(folder.glob("*.whl"))
    if found:
        return found[0]
    sdist = source_distribution(pins, cache)
    _say(f"building durable-rules {pins.BUILD_VERSION} for Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        tree = _patched_tree(pins, sdist, Path(scratch))
        out = Path(scratch) / "wheel"
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
        _run([*pip, "-w", str(out), str(tree)], f"building the {pins.BUILD_VERSION} wheel")
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(out, folder)
        except OSError:  # another build finished first: use it
            pass
    return sorted(folder.glob("*.whl"))[0]


def installed_digest() -> str | None:
    """The patch-set digest recorded in the installed durable-rules, None if absent or not ours."""
    try:
        stamp = distribution("durable-rules").locate_file(STAMP)
    except PackageNotFoundError:
        return None
    for line in Path(str(stamp)).read_text().splitlines() if Path(str(stamp)).is_file() else []:
        if line.startswith("DIGEST = "):
            return line.split('"')[1]
    return None


def install(wheel: Path) -> None:
    """Install the wheel unless this interpreter already has this very build."""
    if installed_digest() == _pins().patch_set_digest(PATCH_DIR):
        return
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps"]
    _run([*pip, str(wheel)], f"installing {wheel.name}")
    _say(f"installed {wheel.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--install", action="store_true", help="install the wheel into this interpreter")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "durable-rules", help="build cache")
    args = parser.parse_args()
    if shutil.which("patch") is None:
        raise SystemExit("build_engine: the 'patch' program is needed (apt-get install patch)")
    args.cache.mkdir(parents=True, exist_ok=True)
    wheel = build(args.cache.resolve())
    if args.install:
        install(wheel)
    print(wheel)


if __name__ == "__main__":
    main()
