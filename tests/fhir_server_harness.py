"""A real FHIR R4 server on 127.0.0.1 for tests (Medplum's FHIR router, in memory).

``tests/fhir_server/`` holds the Node wrapper and its pinned npm packages; the packages are
installed once (``npm ci`` from the committed lockfile) into ``tests/fhir_server/node_modules``
and reused. Use ``running_fhir_server()`` (a context manager) or the module-scoped pytest fixture
``fhir_server``: import it into a test module (``from .fhir_server_harness import fhir_server``).
Tests that need it are skipped, with the reason, only when ``node``/``npm`` are not installed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

SERVER_DIR = Path(__file__).resolve().parent / "fhir_server"
FHIR_JSON = "application/fhir+json"
#: The three packages are pinned together (Medplum 5.x needs Node >= 22.18).
MEDPLUM_VERSION = "4.5.2"
READY_PREFIX = "FHIR test server ready at "


class FhirServerUnavailable(RuntimeError):
    """``node``/``npm`` are missing: tests skip, everything else is an error."""


def _installed() -> bool:
    for name in ("core", "definitions", "fhir-router"):
        manifest = SERVER_DIR / "node_modules" / "@medplum" / name / "package.json"
        try:
            if json.loads(manifest.read_text())["version"] != MEDPLUM_VERSION:
                return False
        except (OSError, ValueError, KeyError):
            return False
    return True


def ensure_installed() -> None:
    """``npm ci`` (or ``npm install`` without a lockfile) once; later calls reuse node_modules."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise FhirServerUnavailable("node and npm are needed for the FHIR test server (Medplum)")
    with open(SERVER_DIR / ".install.lock", "w") as lock:  # parallel test processes install once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed():
            return
        verb = "ci" if (SERVER_DIR / "package-lock.json").exists() else "install"
        done = subprocess.run(
            [npm, verb, "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=SERVER_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0 or not _installed():
            raise RuntimeError(f"npm {verb} failed in {SERVER_DIR}: {done.stderr[-2000:]}")


@dataclass
class FhirServer:
    """A running server: ``url`` is its FHIR base (``http://127.0.0.1:<port>/fhir/R4``)."""

    url: str
    process: subprocess.Popen
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None, **kw: Any):
        headers = {"Accept": FHIR_JSON, **kw.pop("headers", {})}
        if body is not None:
            headers["Content-Type"] = FHIR_JSON
            kw["data"] = json.dumps(body)
        return self.session.request(
            method, f"{self.url}/{path.lstrip('/')}", headers=headers, timeout=30, **kw
        )

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Mapping[str, Any], **kw: Any) -> requests.Response:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Mapping[str, Any], **kw: Any) -> requests.Response:
        return self.request("PUT", path, body, **kw)

    def transaction(self, bundle: Mapping[str, Any]) -> requests.Response:
        """POST a transaction or batch Bundle to the base URL."""
        return self.session.post(
            self.url,
            data=json.dumps(bundle),
            headers={"Accept": FHIR_JSON, "Content-Type": FHIR_JSON},
            timeout=30,
        )

    def load(self, bundle_or_resource: Mapping[str, Any]) -> list[str]:
        """PUT every resource (with an id) of a Bundle, or one resource, at its own id.

        Keeps the fixture's ids so references between its resources hold; returns the
        ``Type/id`` stored. Resources without an id are POSTed (their server id is returned).
        """
        if bundle_or_resource.get("resourceType") == "Bundle":
            resources = [e["resource"] for e in bundle_or_resource.get("entry", []) if "resource" in e]
        else:
            resources = [bundle_or_resource]
        stored = []
        for resource in resources:
            rtype, rid = resource["resourceType"], resource.get("id")
            answer = self.put(f"{rtype}/{rid}", resource) if rid else self.post(rtype, resource)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"{rtype}/{rid}: {answer.status_code} {answer.text[:500]}")
            stored.append(f"{rtype}/{answer.json()['id']}")
        return stored

    def search(self, query: str) -> list[dict[str, Any]]:
        """Every resource a search finds, following ``next`` links."""
        found: list[dict[str, Any]] = []
        answer = self.get(query).json()
        while True:
            found += [e["resource"] for e in answer.get("entry", [])]
            nxt = next((link["url"] for link in answer.get("link", []) if link["relation"] == "next"), None)
            if not nxt:
                return found
            answer = self.session.get(nxt, headers={"Accept": FHIR_JSON}, timeout=30).json()


def _read_ready_line(process: subprocess.Popen, timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX) :].strip()
        seen.append(line)
    raise RuntimeError(f"FHIR test server did not start (exit {process.poll()}): {''.join(seen)[-2000:]}")


@contextlib.contextmanager
def running_fhir_server(timeout: float = 60) -> Iterator[FhirServer]:
    """Install if needed, start ``node server.mjs 0`` on 127.0.0.1, yield it, stop it."""
    ensure_installed()
    process = subprocess.Popen(
        [shutil.which("node") or "node", "server.mjs", "0"],
        cwd=SERVER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = None
    try:
        server = FhirServer(_read_ready_line(process, timeout), process)
        yield server
    finally:
        if server is not None:
            server.session.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[FhirServer]:
    """One server per test module (start-up ~1.5 s); tests share it, so use distinct patient ids."""
    try:
        with running_fhir_server() as server:
            yield server
    except FhirServerUnavailable as exc:
        pytest.skip(str(exc))
