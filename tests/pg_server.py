"""A real PostgreSQL on 127.0.0.1 for tests: initdb + pg_ctl in a temporary directory.

The machine's PostgreSQL binaries (``pg_ctl`` on PATH, else the newest
``/usr/lib/postgresql/<n>/bin``) make one cluster per test session, on a free loopback port,
its unix socket inside the cluster's folder, ``trust`` authentication (loopback only), fsync
off (a test cluster is thrown away). The server refuses to run as root, so under root (CI,
``.ci/run``) every server command runs as the ``postgres`` user (``runuser``) and the folder
is given to it; as any other user they run as that user.

Fixtures (import them into a test module, or use them through ``tests/conftest.py``):

* ``pg_server`` (session): the running ``PgServer``, started on first use, stopped and its
  folder removed at the end. ``stop()``, ``start()`` and ``restart()`` serve "the database
  restarts under load" tests; ``url(dbname)`` is a ``postgresql://`` URL; ``fresh_url()``
  creates an empty database (``TEMPLATE template0``) and returns its URL.
* ``pg_url`` (function): a fresh database for one test.

Tests that need PostgreSQL are SKIPPED, with the reason, only when the binaries are missing (or,
under root, there is no ``postgres`` user to run them); any other failure to start is an error.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: The user the server runs as when the tests run as root.
SERVER_USER = "postgres"
START_TIMEOUT_S = 60


class PgUnavailable(RuntimeError):
    """No PostgreSQL binaries (or no user to run them as): tests skip with this reason."""


def find_bindir() -> Path:
    """The folder of ``pg_ctl`` and ``initdb``: PATH first, else /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]), reverse=True
    )
    if candidates:
        return Path(candidates[0]).parent
    raise PgUnavailable(
        "PostgreSQL server binaries not found (no pg_ctl on PATH nor under /usr/lib/postgresql/*/bin); "
        "install the postgresql package to run these tests"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """One test cluster (see the module docstring)."""

    bindir: Path
    root: Path
    port: int
    as_user: list[str] = field(default_factory=list)  # ["runuser", "-u", "postgres", "--"] under root
    _databases: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> None:
        command = [*self.as_user, str(self.bindir / args[0]), *args[1:]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        """Start (again) on the same port; returns once the server accepts connections."""
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back open transactions and close every connection (a clean restart);
        ``immediate``: as if the machine lost power (recovery on the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """One statement in autocommit (CREATE DATABASE cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def fresh_url(self) -> str:
        """A new empty database; its URL."""
        name = f"t{os.getpid()}_{next(self._databases)}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.url(name)

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _run_as() -> tuple[list[str], int | None]:
    """The command prefix and uid that run the server: ourselves, or ``postgres`` under root."""
    if os.geteuid() != 0:
        return [], None
    try:
        uid = pwd.getpwnam(SERVER_USER).pw_uid
    except KeyError:
        raise PgUnavailable(f"running as root and no {SERVER_USER!r} user to run PostgreSQL as") from None
    runner = shutil.which("runuser")
    if runner is None:
        raise PgUnavailable("running as root and runuser is missing (needed to run PostgreSQL as postgres)")
    return [runner, "-u", SERVER_USER, "--"], uid


@contextlib.contextmanager
def running_pg_server() -> Iterator[PgServer]:
    """A started cluster, destroyed on exit; ``PgUnavailable`` when it cannot be had."""
    bindir = find_bindir()
    prefix, uid = _run_as()
    root = Path(tempfile.mkdtemp(prefix="redflags-pg-"))  # not under pytest's 0700 tmp: postgres reads it
    server = PgServer(bindir=bindir, root=root, port=_free_port(), as_user=prefix)
    try:
        server.socket_dir.mkdir()
        if uid is not None:
            for path in (root, server.socket_dir):
                os.chown(path, uid, -1)
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        with running_pg_server() as server:
            yield server
    except PgUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    return pg_server.fresh_url()
