"""What ``redflags serve`` was asked to do, passed to every worker process as JSON."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from fhir_adapters.intake import DEFAULT_MAX_RESOURCES

#: Environment variable carrying the settings to worker processes (uvicorn imports the app).
ENV = "REDFLAGS_SERVICE_SETTINGS"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    config: str | None = None  # site configuration file (redflags.config)
    clients: str | None = None  # trusted CDS clients file (JSON), see redflags.service.auth
    tokens: str | None = None  # static bearer tokens file for server-to-server $evaluate
    allow_unauthenticated: bool = False
    allow_http_fhir: bool = False  # plain-http fhirServer (loopback tests only)
    public_url: str | None = None  # base URL clients call (JWT aud) when behind a proxy
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 10 * 1024 * 1024
    feedback_db: str = "redflags-feedback.sqlite"
    system_actions: bool = False  # also return the Flag as a CDS Hooks systemAction
    fhir_timeout_s: float = 10.0  # budget for all fhirServer reads of one CDS Hooks call
    now: str | None = None  # fixed evaluation time (ISO dateTime), tests and demos only
    log_level: str = "info"
    engine_processes: int = 1  # redflags serve --workers: engine processes behind the HTTP one
    state: str | None = None  # state store: patient history, alert ledger, outbox (None: stateless)
    retention_days: int | None = None  # history kept (None: the longest rule window + margin)
    fhir_server: str | None = None  # where the outbox delivers Flags and CarePlans
    fhir_token: str | None = field(default=None, repr=False)  # its bearer token
    fhir_smart: str | None = None  # or SMART Backend Services (fhir_adapters.smart_auth JSON file)
    #: resources per call ($evaluate body; CDS prefetch + fetched), more: 413
    max_resources: int = DEFAULT_MAX_RESOURCES
    #: facts handed to the engine per patient, history included (redflags.pipeline.DEFAULT_MAX_FACTS)
    max_facts_per_patient: int = 10_000

    def to_env(self) -> None:
        os.environ[ENV] = orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_env(cls) -> ServiceSettings:
        raw = os.environ.get(ENV)
        if not raw:
            return cls()
        data = orjson.loads(raw)
        data["cors_origins"] = tuple(data.get("cors_origins") or ())
        return cls(**data)

    def path(self, name: str) -> Path | None:
        value = getattr(self, name)
        return Path(value) if value else None
