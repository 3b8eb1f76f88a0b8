"""Start the real service (``redflags serve``) on 127.0.0.1 for a test, over real HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import uvicorn

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Service:
    url: str
    log_path: Path
    process: subprocess.Popen

    def log(self) -> str:
        """Everything the service wrote to stderr so far (structlog JSON lines)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def running_service(
    tmp: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, stores_in_tmp: bool = True
) -> Iterator[Service]:
    """``redflags --log-level info serve --port P ARGS``; waits for /healthz, stops it after.

    Without ``--feedback-db`` (``--state``) in ARGS the feedback database (the state store)
    goes to TMP, not the working tree. With ``--clients`` and no ``--public-url``, the public
    URL is the service's own (the JWT audience is never taken from the Host header).
    ``stores_in_tmp=False``: serve's own defaults (give ENV a temporary ``XDG_STATE_HOME``).
    """
    service = start_service(tmp, *args, env=env, cwd=cwd, stores_in_tmp=stores_in_tmp)
    try:
        wait_ready(service)
        yield service
    finally:
        stop_service(service)


def start_service(
    tmp: Path, *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT, stores_in_tmp: bool = True
) -> Service:
    """The ``serve`` process of ``running_service``, started, not waited for (see ``wait_ready``)."""
    port = free_port()
    if "--clients" in args and "--public-url" not in args:
        args = (*args, "--public-url", f"http://127.0.0.1:{port}")
    if "--feedback-db" not in args and stores_in_tmp:
        args = (*args, "--feedback-db", str(tmp / f"feedback-{port}.sqlite"))
    if "--state" not in args and "--no-state" not in args and stores_in_tmp:
        args = (*args, "--state", str(tmp / f"state-{port}.sqlite"))
    log_path = tmp / f"service-{port}.log"
    cmd = [sys.executable, "-m", "redflags.cli", "--log-level", "info", "serve", "--port", str(port), *args]
    with open(log_path, "wb") as err:
        process = subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **(env or {})}
        )
    return Service(f"http://127.0.0.1:{port}", log_path, process)


def wait_ready(service: Service, bound_s: float = 60) -> None:
    """Until /healthz answers 200; RuntimeError (with the log's end) if it exits or BOUND_S pass."""
    deadline = time.monotonic() + bound_s
    while True:
        if service.process.poll() is not None:
            raise RuntimeError(f"service exited {service.process.returncode}: {service.log()[-2000:]}")
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{service.url}/healthz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"service not ready: {service.log()[-2000:]}")
        time.sleep(0.1)


def stop_service(service: Service) -> None:
    """SIGTERM, then SIGKILL after 15 s (a process already gone is fine)."""
    service.process.terminate()
    try:
        service.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        service.process.kill()
        service.process.wait()


@contextlib.contextmanager
def serving_app(app: object, bound_s: float = 60) -> Iterator[str]:
    """``app`` served by uvicorn in this process on a free loopback port; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + bound_s
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(bound_s)
