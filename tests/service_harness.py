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
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"service exited {process.returncode}: {log_path.read_text()[-2000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"service not ready: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield Service(url, log_path, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
