"""N ``redflags serve`` replicas sharing one state location, as several hosts behind a balancer.

Each replica is a real ``serve`` process (``service_harness.start_service``) started from its
OWN working directory (``TMP/replica-<i>``: nothing may depend on a shared cwd), on its own
loopback port, with the same ``--state`` (a PostgreSQL URL, or one SQLite file that several
processes on one host share). All are started at once and waited for together (``/healthz``,
bounded), so N replicas cost about one start. ``kill(i)`` is a host dying: SIGKILL, no
shutdown; its engine processes end when their pipes close.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from .service_harness import Service, start_service, stop_service, wait_ready


@dataclass
class Replicas:
    """The running replicas, in start order, and the state location they share."""

    services: list[Service]
    state: str

    def __getitem__(self, i: int) -> Service:
        return self.services[i]

    def __len__(self) -> int:
        return len(self.services)

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.services]

    def kill(self, i: int) -> None:
        """SIGKILL replica ``i`` (no shutdown, no lease given back) and reap it."""
        process = self.services[i].process
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def events(self, i: int | None = None) -> list[dict]:
        """The structlog JSON lines of replica ``i`` (all replicas when None)."""
        chosen = self.services if i is None else [self.services[i]]
        return [orjson.loads(line) for s in chosen for line in s.log().splitlines() if line.startswith("{")]


@contextlib.contextmanager
def running_replicas(
    tmp: Path,
    count: int,
    state: str,
    *args: str,
    per_replica: Sequence[Sequence[str]] = (),
    bound_s: float = 90,
) -> Iterator[Replicas]:
    """``count`` replicas of ``serve --state STATE ARGS`` (replica i also gets ``per_replica[i]``)."""
    services: list[Service] = []
    try:
        for i in range(count):
            cwd = tmp / f"replica-{i}"
            cwd.mkdir(exist_ok=True)
            extra = tuple(per_replica[i]) if i < len(per_replica) else ()
            services.append(start_service(tmp, "--state", state, *args, *extra, cwd=cwd, stores_in_tmp=False))
        for service in services:
            wait_ready(service, bound_s)
        yield Replicas(services, state)
    finally:
        for service in services:
            stop_service(service)


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``--state`` every replica is given: a fresh PostgreSQL database (``tests/pg_server``,
    skipped with its reason where PostgreSQL cannot run), or one SQLite file on this host."""
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    folder = tmp_path / "shared"
    folder.mkdir(exist_ok=True)
    return str(folder / "redflags-state.sqlite")
