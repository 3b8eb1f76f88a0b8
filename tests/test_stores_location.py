"""Issue 13 item 7 (stores together, one SQLite helper) and item 9 (serve's default location).

The three stores (state, feedback, jti) open through ``sqlite_file.open_versioned``: owner-only
files, WAL, ``synchronous=FULL``, a busy timeout, a versioned schema migrated forward; the jti
store's path is named by its caller, never guessed; ``open_stores`` opens all three of one
location; ``redflags serve`` keeps them in the user's state directory, never the working
directory; a URL of a kind redflags does not open, given as a store path, is one line and exit
2, never a folder called ``sqlite:`` (a ``postgresql://`` URL opens a database:
tests/test_pg_cli.py).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from redflags.service.auth.callers import Authenticator, AuthSetupError
from redflags.service.settings import ServiceSettings
from redflags.state import feedback as feedback_module
from redflags.state import jti as jti_module
from redflags.state import model, sqlite_store
from redflags.state.feedback import SqliteFeedbackStore
from redflags.state.jti import SqliteJtiStore
from redflags.state.location import StorePaths, UnsupportedLocation
from redflags.state.model import ShownCard
from redflags.state.postgres_feedback import PostgresFeedbackStore
from redflags.state.postgres_jti import PostgresJtiStore
from redflags.state.postgres_state import PostgresStateStore
from redflags.state.sqlite_store import SqliteStateStore
from redflags.state.stores import open_feedback, open_state, open_stores

from .auth_helpers import write_clients
from .operator_helpers import run
from .service_harness import ROOT, running_service

FIXTURES = ROOT / "fixtures" / "state"
OLD_ISS = "https://ehr-a.example.org/"


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def version(path: Path) -> list[int]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_version")]


# -- item 1: one helper, the jti store versioned and named by its caller ---------------------------


def test_every_store_file_is_made_by_the_one_helper(tmp_path: Path) -> None:
    """Same pragmas, modes and version row for all three (the jti store had none of the last two)."""
    stores = open_stores(tmp_path / "site" / "state.sqlite")
    try:
        conns = {
            "state": stores.state._conn,  # type: ignore[union-attr]
            "feedback": stores.feedback._conn,  # type: ignore[attr-defined]
            "jti": stores.jti._db,  # type: ignore[attr-defined]
        }
        for name, conn in conns.items():
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", name
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2, name  # FULL
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000, name
    finally:
        stores.close()
    paths = stores.paths
    assert version(paths.state) == [sqlite_store.SCHEMA_VERSION]
    assert version(paths.feedback) == [feedback_module.SCHEMA_VERSION]
    assert version(paths.jti) == [jti_module.SCHEMA_VERSION]
    for path in (paths.state, paths.feedback, paths.jti):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE((tmp_path / "site").stat().st_mode) == 0o700


def test_the_files_of_the_release_before_open_together_and_upgrade(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(FIXTURES / "store-v1-30fb331.sqlite", site / "redflags-state.sqlite")
    shutil.copy(FIXTURES / "feedback-v1-30fb331.sqlite", site / "redflags-feedback.sqlite")
    shutil.copy(FIXTURES / "jti-v0-b855ee8.sqlite", site / "redflags-jti.sqlite")
    stores = open_stores(site / "redflags-state.sqlite")
    try:
        assert stores.state is not None and stores.state.counts()["pending"] == 1
        assert [r.rule for r in stores.feedback.report().rules] == ["cauda_equina_syndrome"]
        assert not stores.jti.first_use(OLD_ISS, "jti-old", 4102444800.0)  # still refused
        assert stores.jti.first_use(OLD_ISS, "jti-new", 4102444800.0)
    finally:
        stores.close()
    assert version(site / "redflags-state.sqlite") == [sqlite_store.SCHEMA_VERSION]
    assert version(site / "redflags-feedback.sqlite") == [feedback_module.SCHEMA_VERSION]
    assert version(site / "redflags-jti.sqlite") == [1]


def test_a_jti_file_of_a_newer_version_or_another_kind_is_refused_untouched(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite"
    SqliteJtiStore(newer).close()
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (jti_module.SCHEMA_VERSION + 1,))
    with pytest.raises(
        sqlite3.Error, match=r"jti database schema version \[2\], this redflags reads version 1"
    ):
        SqliteJtiStore(newer)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (x)")
    with pytest.raises(sqlite3.Error, match="not a redflags jti database"):
        SqliteJtiStore(foreign)
    with sqlite3.connect(foreign) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # left as found


def test_the_jti_store_is_where_the_settings_say_never_beside_the_feedback_file(tmp_path: Path) -> None:
    clients = str(write_clients(tmp_path / "clients.json", ec.generate_private_key(ec.SECP384R1())))
    feedback = str(tmp_path / "feedback" / "feedback.sqlite")
    public = "https://cds.example.org"
    with pytest.raises(AuthSetupError, match="needs a jti store"):
        Authenticator.from_settings(ServiceSettings(clients=clients, feedback_db=feedback, public_url=public))
    jti = tmp_path / "guard" / "ids.sqlite"
    settings = ServiceSettings(clients=clients, feedback_db=feedback, jti_db=str(jti), public_url=public)
    Authenticator.from_settings(settings)
    assert jti.is_file() and version(jti) == [1]
    assert not (tmp_path / "feedback").exists()


# -- item 2: one interface per store; callers use them --------------------------------------------

IMPLEMENTATIONS = [
    (model.StateStore, SqliteStateStore),
    (model.FeedbackStore, SqliteFeedbackStore),
    (model.JtiStore, SqliteJtiStore),
    (model.StateStore, PostgresStateStore),
    (model.FeedbackStore, PostgresFeedbackStore),
    (model.JtiStore, PostgresJtiStore),
]


@pytest.mark.parametrize(("protocol", "implementation"), IMPLEMENTATIONS, ids=lambda x: x.__name__)
def test_each_store_implements_its_protocol_in_model(protocol: type, implementation: type) -> None:
    """Every method of the protocol, with the same parameters, on SQLite and PostgreSQL alike."""
    wanted = {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    assert wanted
    for name in wanted:
        expected = inspect.signature(getattr(protocol, name))
        found = inspect.signature(getattr(implementation, name))
        assert list(found.parameters) == list(expected.parameters), name


def test_callers_outside_state_never_name_a_sqlite_store() -> None:
    """They open stores through the factories and hold the protocol types (issue 14 adds a twin)."""
    offenders = []
    for path in sorted((ROOT / "redflags").rglob("*.py")):
        if path.parent.name == "state":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                named = [a.name for a in node.names if a.name.startswith("Sqlite")]
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in named]
    assert offenders == []


def test_open_stores_keeps_the_three_together_and_each_may_be_named(tmp_path: Path) -> None:
    paths = StorePaths.resolve(tmp_path / "a" / "state.sqlite", jti=tmp_path / "b" / "jti.sqlite")
    assert paths.feedback == tmp_path / "a" / "redflags-feedback.sqlite"
    stores = open_stores(paths)
    stores.close()
    assert tree(tmp_path) == [
        "a",
        "a/redflags-feedback.sqlite",
        "a/state.sqlite",
        "b",
        "b/jti.sqlite",
    ]
    assert StorePaths.resolve(folder=tmp_path / "d").state == tmp_path / "d" / "redflags-state.sqlite"


# -- item 3: serve's default location -------------------------------------------------------------


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDFLAGS_", "XDG_"))}
    return {
        **env,
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(ROOT),
    }


def test_serve_keeps_its_stores_in_the_user_state_directory_and_says_where(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(tmp_path)
    folder = tmp_path / "xdg" / "redflags"
    helped = subprocess.run(
        [sys.executable, "-m", "redflags.cli", "serve", "--help"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert helped.returncode == 0
    assert str(folder) in "".join(helped.stdout.split())  # the help wraps the path
    with running_service(
        tmp_path, "--allow-unauthenticated", env=env, cwd=work, stores_in_tmp=False
    ) as service:
        log = service.log()
    assert tree(work) == []  # nothing in the working directory
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".sqlite") == [
        "redflags-feedback.sqlite",
        "redflags-jti.sqlite",
        "redflags-state.sqlite",
    ]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    said = [json.loads(line) for line in log.splitlines() if '"state_store"' in line]
    assert len(said) == 1 and said[0]["path"] == str(folder / "redflags-state.sqlite")


def test_serve_keeps_feedback_and_jti_beside_a_named_state_file(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env(tmp_path)
    with running_service(
        tmp_path,
        "--allow-unauthenticated",
        "--state",
        "site/s.sqlite",
        env=env,
        cwd=work,
        stores_in_tmp=False,
    ):
        pass
    assert sorted(p for p in tree(work) if p.endswith(".sqlite")) == [
        "site/redflags-feedback.sqlite",
        "site/redflags-jti.sqlite",
        "site/s.sqlite",
    ]
    assert not (tmp_path / "xdg").exists()


# -- item 4: a URL is not a file name --------------------------------------------------------------

URL_CASES = {
    "serve --state": (
        "serve",
        "--allow-unauthenticated",
        "--port",
        "1",
        "--state",
        "mysql://u:pw@db/rf",
    ),
    "serve --feedback-db": (
        "serve",
        "--allow-unauthenticated",
        "--port",
        "1",
        "--feedback-db",
        "sqlite://f.db",
    ),
    "serve --jti-db": ("serve", "--allow-unauthenticated", "--port", "1", "--jti-db", "x://"),
    "replay --state": ("replay", ".", "--state", "mysql://u:pw@db/rf"),
    "outbox status --state": ("outbox", "status", "--state", "mysql://u:pw@db/rf"),
    "history tenants --state": ("history", "tenants", "--state", "sqlite://state.db"),
    "feedback report --db": ("feedback", "report", "--db", "mysql://u:pw@db/rf"),
}


@pytest.mark.parametrize("name", list(URL_CASES))
def test_a_url_given_as_a_store_path_is_one_line_and_exit_2(name: str, tmp_path: Path) -> None:
    done = run(tmp_path, *URL_CASES[name], env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "URL" in lines[0], lines
    assert "pw" not in done.stderr  # a password in the URL is never echoed
    assert tree(tmp_path) == []


def test_a_url_in_the_environment_is_refused_too(tmp_path: Path) -> None:
    done = run(tmp_path, "outbox", "status", env={"REDFLAGS_STATE": "mysql://db/rf"})
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert tree(tmp_path) == []


def test_the_store_factories_refuse_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("mysql://db/rf", "sqlite://state.db"):
        with pytest.raises(UnsupportedLocation, match="URL"):
            open_state(url)
        with pytest.raises(UnsupportedLocation, match="URL"):
            open_stores(url)
    assert tree(tmp_path) == []


# -- the defaults of the release before, deprecated for one release --------------------------------


def state_store_line(log: str) -> dict[str, object]:
    said = [json.loads(line) for line in log.splitlines() if '"state_store"' in line]
    assert len(said) == 1
    return said[0]


def test_serve_still_uses_a_state_file_left_in_the_working_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(FIXTURES / "store-v1-30fb331.sqlite", work / "redflags-state.sqlite")
    with running_service(
        tmp_path, "--allow-unauthenticated", env=clean_env(tmp_path), cwd=work, stores_in_tmp=False
    ) as service:
        log = service.log()
    assert '"event": "state_store_in_working_directory"' in log
    assert state_store_line(log)["path"] == "redflags-state.sqlite"
    assert version(work / "redflags-state.sqlite") == [sqlite_store.SCHEMA_VERSION]  # upgraded
    assert not (tmp_path / "xdg" / "redflags" / "redflags-state.sqlite").exists()


def test_serve_still_uses_a_jti_file_kept_beside_the_feedback_db(tmp_path: Path) -> None:
    (tmp_path / "fb").mkdir()
    legacy = tmp_path / "fb" / "redflags-jti.sqlite"
    shutil.copy(FIXTURES / "jti-v0-b855ee8.sqlite", legacy)
    with running_service(
        tmp_path, "--allow-unauthenticated", "--feedback-db", str(tmp_path / "fb" / "f.sqlite")
    ) as service:
        log = service.log()
    assert '"event": "jti_store_beside_feedback"' in log
    assert state_store_line(log)["jti"] == str(legacy)


def test_feedback_report_reads_the_file_serve_writes_by_default(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert run(tmp_path, "feedback", "report", env=env).returncode == 2  # nothing yet: no new empty file
    assert tree(tmp_path) == []
    for folder, extra in (
        (tmp_path / "xdg" / "redflags", {}),
        (tmp_path / "site", {"REDFLAGS_STATE": "site/s.sqlite"}),
    ):
        store = open_feedback(folder / "redflags-feedback.sqlite")
        store.record_cards("cds", [ShownCard("c1", "cauda_equina_syndrome", "A", "critical")], 1_765_000_000)
        store.close()
        done = run(tmp_path, "feedback", "report", "--format", "json", env={**env, **extra})
        assert done.returncode == 0, done.stderr
        assert [r["rule"] for r in json.loads(done.stdout)["rules"]] == ["cauda_equina_syndrome"]
