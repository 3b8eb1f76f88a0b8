"""What ``redflags serve`` was asked to do, passed to the HTTP process as JSON in its environment.

Secrets (``SECRET_FIELDS``: the write-back token, the /metrics token) never enter that
environment: every engine process inherits it, and ``/proc/<pid>/environ`` of each would show
them. ``to_env`` keeps them in this process's memory instead, where ``from_env`` (the uvicorn
factory, run in the same process by ``redflags serve``) finds them again; the tokens' env
variables are removed as well.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from fhir_adapters.intake import DEFAULT_MAX_RESOURCES

#: Environment variable carrying the settings to worker processes (uvicorn imports the app).
ENV = "REDFLAGS_SERVICE_SETTINGS"
#: Environment variable an operator may give the write-back token in (read by the CLI).
FHIR_TOKEN_ENV = "REDFLAGS_FHIR_TOKEN"
#: Environment variable an operator may give the /metrics token in (read by the CLI).
METRICS_TOKEN_ENV = "REDFLAGS_METRICS_TOKEN"
#: Fields kept out of the environment (see the module docstring).
SECRET_FIELDS = ("fhir_token", "metrics_token")
#: Accepted JWT lifetime (``exp - iat``) by default: CDS Hooks tokens live about five minutes.
MAX_TOKEN_LIFETIME_S = 300

_secrets: dict[str, str | None] = {}  # this process only: never inherited by a child


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    config: str | None = None  # site configuration file (redflags.config)
    #: serve --site NAME=FILE: each site's configuration, served under /sites/NAME (service.sites)
    sites: dict[str, str] = field(default_factory=dict)
    clients: str | None = None  # trusted CDS clients file (JSON), see redflags.service.auth.callers
    tokens: str | None = None  # static bearer tokens file for server-to-server $evaluate
    allow_unauthenticated: bool = False
    allow_http_fhir: bool = False  # plain-http fhirServer (loopback tests only)
    public_url: str | None = None  # base URL clients call (JWT aud) when behind a proxy
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 10 * 1024 * 1024
    feedback_db: str = "redflags-feedback.sqlite"
    #: JWT ids already used (the replay guard every worker shares), required with ``clients``;
    #: ``redflags serve`` names it (``redflags.state.location``: beside the state store)
    jti_db: str | None = None
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
    public_urls: tuple[str, ...] = ()  # every base URL clients may call (JWT aud); public_url is the first
    max_token_lifetime_s: int = MAX_TOKEN_LIFETIME_S  # longest exp - iat of a CDS client JWT
    fhir_allow: tuple[str, ...] = ()  # fhirServer origins every client may name, private ones too
    fhir_max_bytes: int = 10 * 1024 * 1024  # bytes read from fhirServer for one call, all pages
    delivered_keep_days: int = 30  # delivered outbox items are deleted after this
    outbox_lease_s: int = 120  # an item being sent is held this long (then another replica may send it)
    feedback_keep_days: int = 180  # shown CDS cards and their feedback are deleted after this
    call_deadline_s: float = 60.0  # per engine call: then the engine process is killed and replaced
    shutdown_grace_s: float = 10.0  # SIGTERM: in-flight calls finish or are abandoned within this
    header_timeout_s: float = 10.0  # a client sends a request's headers within this, or is closed
    body_timeout_s: float = 30.0  # ... and its body within this (408)
    max_connections: int = 1000  # open connections (503 beyond; idle ones are closed first)
    #: resources per call ($evaluate body; CDS prefetch + fetched), more: 413
    max_resources: int = DEFAULT_MAX_RESOURCES
    #: facts handed to the engine per patient, history included (redflags.pipeline.DEFAULT_MAX_FACTS)
    max_facts_per_patient: int = 10_000
    #: bearer token GET /metrics requires (None: /metrics is open; it names no patient)
    metrics_token: str | None = field(default=None, repr=False)

    def to_env(self) -> None:
        """Settings into the environment for the app factory; secrets stay in this process."""
        data = asdict(self)
        for name in SECRET_FIELDS:
            _secrets[name] = data.pop(name)
        os.environ.pop(FHIR_TOKEN_ENV, None)
        os.environ.pop(METRICS_TOKEN_ENV, None)
        os.environ[ENV] = orjson.dumps(data).decode()

    def accepted_urls(self) -> tuple[str, ...]:
        """The base URLs a JWT ``aud`` may name (``--public-url``, repeatable)."""
        urls = self.public_urls or ((self.public_url,) if self.public_url else ())
        return tuple(url.rstrip("/") for url in urls)

    @classmethod
    def from_env(cls) -> ServiceSettings:
        raw = os.environ.get(ENV)
        if not raw:
            return cls()
        data = orjson.loads(raw)
        data["cors_origins"] = tuple(data.get("cors_origins") or ())
        data["public_urls"] = tuple(data.get("public_urls") or ())
        data["fhir_allow"] = tuple(data.get("fhir_allow") or ())
        return cls(**{**data, **_secrets})

    def path(self, name: str) -> Path | None:
        value = getattr(self, name)
        return Path(value) if value else None
