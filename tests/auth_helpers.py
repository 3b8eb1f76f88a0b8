"""Client JWTs, key sets and an in-thread service with auth probes, shared by the auth tests."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import requests
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import Depends
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from redflags.service.app import create_app
from redflags.service.auth.callers import cds_client, engine_client
from redflags.service.settings import ServiceSettings

from .service_harness import free_port

ISS = "https://ehr.example.org/"
AUD = "https://cds.example.org/cds-services/redflags-patient-view"
STATIC_TOKEN = "s2s-" + "k" * 28


def public_jwk(private: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if isinstance(private, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    return {**algorithm.to_jwk(private.public_key(), as_dict=True), "kid": kid, "use": "sig", **extra}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4())}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(
    private: Any, alg: str, kid: str | None, payload: dict[str, Any] | None = None, **header: Any
) -> str:
    headers = {k: v for k, v in {"kid": kid, "typ": "JWT", **header}.items() if v is not None}
    return jwt.encode(payload or claims(), private, algorithm=alg, headers=headers)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_clients(path: Path, ec_key: Any) -> Path:
    path.write_text(json.dumps({"clients": [{"iss": ISS, "jwks": {"keys": [public_jwk(ec_key, "ec-1")]}}]}))
    return path


class ThreadedServer:
    """``create_app(settings)`` plus test-only routes guarded by the real dependencies, served by
    uvicorn on 127.0.0.1 in a thread (lifespan off: these routes need no Pipeline)."""

    def __init__(self, settings: ServiceSettings) -> None:
        port = free_port()
        if settings.clients and not settings.public_url:  # the audience: this server's own URL
            settings = dataclasses.replace(settings, public_url=f"http://127.0.0.1:{port}")
        app = create_app(settings)

        @app.post("/auth-probe/cds")
        async def probe(client: str = Depends(cds_client)) -> dict[str, str]:
            return {"client": client}

        @app.post("/auth-probe/evaluate")
        async def evaluate(client: str = Depends(engine_client)) -> dict[str, str]:
            return {"client": client}

        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def post(url: str, credential: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return requests.post(url, headers=headers, json={}, timeout=10)
