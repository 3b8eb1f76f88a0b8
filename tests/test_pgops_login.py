"""A login the database refuses (wrong password, no such role or database) is one line naming
the problem and the database, never the password: exit 2 on the CLI (calling again cannot
help), and 503 naming it on ``/readyz`` when it starts while serving (tests/pg_server.py; the
role logs in with scram-sha-256 on loopback TCP, every other role is trusted)."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import requests

from redflags.state.location import DatabaseRefused
from redflags.state.stores import open_feedback, open_jti, open_state, open_stores

from .operator_helpers import run
from .pg_server import PgServer
from .service_harness import free_port, running_service

ROLE, PASSWORD = "rf_login", "right-pw-1"
_DATABASES = itertools.count()


@pytest.fixture(scope="module")
def login_db(pg_server: PgServer) -> str:
    """A database owned by ``ROLE``, which must give its password; the URL with the right one."""
    hba = pg_server.data / "pg_hba.conf"
    line = f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n"
    text = hba.read_text()
    if line not in text:
        hba.write_text(line + text)  # first line that matches wins
        pg_server.execute("SELECT pg_reload_conf()")
        pg_server.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
    name = f"login{os.getpid()}_{next(_DATABASES)}"  # one per module that uses the fixture
    pg_server.execute(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
    return f"postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{pg_server.port}/{name}"


def redflags(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run(cwd, *args, env={"XDG_STATE_HOME": str(cwd / "xdg")})


def wrong(login_db: str, kind: str) -> tuple[str, str]:
    """A URL with one thing wrong, and what the message must say."""
    base, _name = login_db.rsplit("/", 1)
    return {
        "password": (login_db.replace(PASSWORD, "s3cret-wrong"), "wrong password"),
        "database": (f"{base}/nosuchdb", "no such database"),
        "role": (login_db.replace(f"{ROLE}:{PASSWORD}", "nosuchrole:s3cret-wrong"), "no such role"),
    }[kind]


KINDS = ("password", "database", "role")


def test_the_right_password_opens_every_store(login_db: str) -> None:
    open_stores(login_db).close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("opener", [open_state, open_feedback, open_jti])
def test_a_refused_login_is_one_line_naming_the_problem(login_db: str, kind: str, opener) -> None:
    url, problem = wrong(login_db, kind)
    with pytest.raises(DatabaseRefused) as refused:
        opener(url)
    message = str(refused.value)
    assert "\n" not in message and problem in message, message
    assert "127.0.0.1" in message and PASSWORD not in message and "s3cret" not in message


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "args",
    [("outbox", "status", "--state"), ("feedback", "report", "--state"), ("history", "tenants", "--state")],
)
def test_the_cli_exits_2_on_a_refused_login(
    login_db: str, tmp_path: Path, kind: str, args: tuple[str, ...]
) -> None:
    url, problem = wrong(login_db, kind)
    done = redflags(tmp_path, *args, url)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and problem in lines[0] and "s3cret" not in done.stderr + done.stdout


def test_serve_exits_2_on_a_wrong_password(login_db: str, tmp_path: Path) -> None:
    url, _problem = wrong(login_db, "password")
    done = redflags(tmp_path, "serve", "--allow-unauthenticated", "--port", str(free_port()), "--state", url)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "wrong password" in done.stderr.strip().splitlines()[-1] and "s3cret" not in done.stderr


def test_a_password_changed_while_serving_makes_readyz_503_naming_it(
    login_db: str, pg_server: PgServer, tmp_path: Path
) -> None:
    with running_service(
        tmp_path, "--allow-unauthenticated", "--state", login_db, "--feedback-db", login_db, cwd=tmp_path
    ) as service:
        assert requests.get(f"{service.url}/readyz", timeout=30).status_code == 200
        pg_server.execute(f"ALTER ROLE {ROLE} PASSWORD 'changed-pw-2'")
        try:
            with psycopg.connect(pg_server.url(), autocommit=True) as conn:  # drop its connections
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (ROLE,)
                )
            answer = requests.get(f"{service.url}/readyz", timeout=30)
        finally:
            pg_server.execute(f"ALTER ROLE {ROLE} PASSWORD '{PASSWORD}'")
        assert answer.status_code == 503 and answer.headers.get("Retry-After")
        assert "password authentication failed" in answer.text, answer.text
        assert PASSWORD not in answer.text + service.log()
        assert requests.get(f"{service.url}/readyz", timeout=30).status_code == 200  # back by itself
