"""``redflags serve``: start the HTTP service (uvicorn, N worker processes)."""

from __future__ import annotations

import contextlib
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from engine.logger import get_logger
from fhir_adapters.errors import IntakeError
from fhir_adapters.safe_url import UnsafeUrl, parse_origin
from fhir_adapters.times import parse_now
from redflags import config, metrics
from redflags.cli import root_log_level
from redflags.cli.fhir_token_option import fhir_token_callback, fhir_token_file_option, read_token_file
from redflags.cli.state_options import STATE_ENV, LocationRefused, StorePath
from redflags.delivery.outbox_loop import outbox_auth
from redflags.service.auth.callers import NO_PUBLIC_URL, Authenticator, AuthSetupError, public_url_problem
from redflags.service.http.listener import AnnouncingServer, listen
from redflags.service.http.protocol import guarded_protocol
from redflags.service.settings import MAX_TOKEN_LIFETIME_S, METRICS_TOKEN_ENV, ServiceSettings
from redflags.service.sites import SiteError, parse_sites
from redflags.state.location import (
    FEEDBACK_FILE,
    JTI_FILE,
    STATE_FILE,
    StorePaths,
    UnsupportedLocation,
    default_folder,
    redact,
)
from redflags.state.model import StateStoreError
from redflags.state.stores import open_stores

log = get_logger("redflags.serve")


class SetupRefused(click.ClickException):
    """Settings ``serve`` will not run with: one line (no usage text), exit 2 like a usage error."""

    exit_code = 2


@click.command("serve")  # main's --log-level applies (default here: request lines are info)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Engine processes (the rules engine is single-threaded per process); one HTTP process "
    "hands each evaluation to the next free one.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="REDFLAGS_CONFIG",
    help="Site configuration file (TOML).",
)
@click.option(
    "--site",
    "site_values",
    multiple=True,
    metavar="NAME=FILE",
    help="Another site's configuration (TOML), repeatable: served under /sites/NAME/cds-services "
    "and /sites/NAME/fhir/$evaluate by the same engine processes. With --site and no --config "
    "the unprefixed paths answer 404.",
)
@click.option(
    "--clients",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Trusted CDS clients: {"clients": [{"iss": ..., "jwks": {...}} | {"iss": ..., "jku": ...}]}.',
)
@click.option(
    "--tokens",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Static bearer tokens for server-to-server $evaluate (one per line).",
)
@click.option(
    "--allow-unauthenticated", is_flag=True, help="Accept calls without credentials (logs a warning)."
)
@click.option(
    "--allow-http-fhir",
    is_flag=True,
    help="Accept a plain-http fhirServer on a loopback address (tests); never a remote one.",
)
@click.option(
    "--public-url",
    multiple=True,
    help="Base URL CDS clients call (the JWT audience), repeatable; required with --clients: "
    "the audience is never taken from the Host header.",
)
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allowed CORS origin (repeatable).")
@click.option("--max-body-bytes", default=10 * 1024 * 1024, show_default=True, type=click.IntRange(1024))
@click.option(
    "--feedback-db",
    type=StorePath(str),
    help=f"SQLite file of CDS Hooks feedback. Default: {FEEDBACK_FILE} beside the state store.",
)
@click.option(
    "--jti-db",
    type=StorePath(str),
    help=f"SQLite file of the CDS client JWT ids already used (replay guard, with --clients). "
    f"Default: {JTI_FILE} beside the state store.",
)
@click.option(
    "--state",
    "state_path",
    envvar=STATE_ENV,
    type=StorePath(str),
    help="State store: patient history across calls, alert ledger, outbox: a SQLite file, or a "
    "postgresql:// URL shared by replicas (feedback and jti then live in that database too). Default: "
    f"${STATE_ENV}, else {STATE_FILE} in the user's state directory, here {default_folder()} "
    "(made owner-only; never the working directory).",
)
@click.option(
    "--retention-days",
    type=click.IntRange(1),
    help="Days of patient history kept (default: the longest rule window plus 30 days).",
)
@click.option("--no-state", is_flag=True, help="Keep no history: every call is evaluated on its own data.")
@click.option("--fhir-server", metavar="URL", help="FHIR server the outbox writes Flags and CarePlans to.")
@click.option(
    "--fhir-token",
    envvar="REDFLAGS_FHIR_TOKEN",
    callback=fhir_token_callback,
    help="Bearer token for --fhir-server (visible in ps: better $REDFLAGS_FHIR_TOKEN or --fhir-token-file).",
)
@fhir_token_file_option
@click.option(
    "--fhir-smart",
    envvar="REDFLAGS_FHIR_SMART",
    type=click.Path(exists=True, dir_okay=False),
    help="SMART Backend Services for --fhir-server (JSON: token_url, client_id, private_key, kid, alg).",
)
@click.option("--system-actions", is_flag=True, help="Also return each Flag as a CDS Hooks systemAction.")
@click.option(
    "--fhir-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 120),
    help="Seconds allowed for all fhirServer reads of one CDS Hooks call (then 412).",
)
@click.option(
    "--now",
    "now_text",
    help="Fixed evaluation time (ISO dateTime) instead of the clock: tests and demos only.",
)
@click.option(
    "--max-token-lifetime",
    default=MAX_TOKEN_LIFETIME_S,
    show_default=True,
    type=click.IntRange(10, 3600),
    help="Longest lifetime (exp - iat, seconds) of a CDS client JWT; older iat refused too.",
)
@click.option(
    "--fhir-allow",
    "fhir_allow",
    multiple=True,
    metavar="ORIGIN",
    help="fhirServer origin (scheme://host[:port]) every client may name, even on a private "
    "address (repeatable; per client: fhirServers in --clients).",
)
@click.option(
    "--fhir-max-bytes",
    default=10 * 1024 * 1024,
    show_default=True,
    type=click.IntRange(1024),
    help="Bytes read from fhirServer for one CDS Hooks call, all pages together (more: 412).",
)
@click.option(
    "--delivered-keep-days",
    default=30,
    show_default=True,
    type=click.IntRange(1),
    help="Days a delivered outbox item is kept before it is deleted.",
)
@click.option(
    "--outbox-lease",
    default=120,
    show_default=True,
    type=click.IntRange(1),
    help="Seconds an outbox item being sent is held by this replica; one killed mid-send leaves "
    "its items to the others after this. Keep it longer than one send with its retries.",
)
@click.option(
    "--feedback-keep-days",
    default=180,
    show_default=True,
    type=click.IntRange(1),
    help="Days shown CDS cards and their feedback are kept (the feedback report's window).",
)
@click.option(
    "--call-deadline",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds one evaluation may take in an engine process; then that process is killed "
    "and replaced, and the call answered 503/500.",
)
@click.option(
    "--shutdown-grace",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 600),
    help="On SIGTERM, seconds in-flight calls may take to finish before they are abandoned.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Seconds a client may take to send a request's headers, from the connection's opening "
    "or the end of its previous answer (then it is closed).",
)
@click.option(
    "--body-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    help="Seconds a client may take to send a request's body (then 408).",
)
@click.option(
    "--max-connections",
    default=1000,
    show_default=True,
    type=click.IntRange(8, 100_000),
    help="Open connections served at once (503 beyond); a quarter may wait for their headers, "
    "the oldest of those is closed first.",
)
@click.option(
    "--max-resources",
    default=ServiceSettings().max_resources,
    show_default=True,
    type=click.IntRange(1),
    help="Resources per call ($evaluate body, CDS prefetch + fetched); more is refused with 413.",
)
@click.option(
    "--max-facts-per-patient",
    default=ServiceSettings().max_facts_per_patient,
    show_default=True,
    type=click.IntRange(1),
    help="Facts per patient handed to the engine, history included; over it the most recent are kept.",
)
@click.option(
    "--metrics-token",
    envvar=METRICS_TOKEN_ENV,
    help="Bearer token GET /metrics requires (default: /metrics is open; it names no patient). "
    f"Visible in ps: better ${METRICS_TOKEN_ENV} or --metrics-token-file.",
)
@click.option(
    "--metrics-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File holding the /metrics bearer token (kept out of the process list).",
)
def serve_command(
    host: str,
    port: int,
    workers: int,
    config_path: Path | None,
    clients: Path | None,
    tokens: Path | None,
    allow_unauthenticated: bool,
    allow_http_fhir: bool,
    public_url: tuple[str, ...],
    cors_origins: tuple[str, ...],
    max_body_bytes: int,
    feedback_db: str | None,
    jti_db: str | None,
    state_path: str | None,
    retention_days: int | None,
    no_state: bool,
    fhir_server: str | None,
    fhir_token: str | None,
    fhir_smart: str | None,
    system_actions: bool,
    fhir_timeout: float,
    now_text: str | None,
    max_token_lifetime: int,
    fhir_allow: tuple[str, ...],
    fhir_max_bytes: int,
    delivered_keep_days: int,
    outbox_lease: int,
    feedback_keep_days: int,
    call_deadline: float,
    shutdown_grace: float,
    header_timeout: float,
    body_timeout: float,
    max_connections: int,
    max_resources: int,
    max_facts_per_patient: int,
    metrics_token: str | None,
    metrics_token_file: Path | None,
    site_values: tuple[str, ...] = (),
) -> None:
    """Serve CDS Hooks 2.0 (/cds-services) and FHIR $evaluate (/fhir/$evaluate); docs at /docs."""
    import uvicorn

    if not (clients or allow_unauthenticated):  # CDS Hooks requires every client to sign its calls
        raise click.UsageError(
            "no --clients: refusing to serve without authentication "
            "(--allow-unauthenticated overrides, for tests only)"
        )
    if clients and not public_url:  # aud from the Host header would let a caller pick it
        raise SetupRefused(NO_PUBLIC_URL)
    for url in public_url:
        if problem := public_url_problem(url):
            raise SetupRefused(f"--public-url {url!r}: {problem}")
    try:
        site_configs = {name: str(Path(path).resolve()) for name, path in parse_sites(site_values).items()}
    except SiteError as exc:
        raise click.UsageError(str(exc)) from None
    if fhir_server and no_state:
        raise click.UsageError("--fhir-server needs the state store (its outbox): drop --no-state")
    listener = listen(host, port)  # bound first: a port in use is one line, before anything starts
    try:
        paths = _store_paths(state_path, feedback_db, jti_db)
    except UnsupportedLocation as exc:
        raise LocationRefused(str(exc)) from None
    try:  # create the databases (and their schemas) once, before the engines race for them
        open_stores(paths, stateless=no_state).close()
    except UnsupportedLocation as exc:  # a login the database refused: fix the URL (exit 2)
        raise LocationRefused(redact(str(exc))) from None
    except StateStoreError as exc:
        raise click.ClickException(redact(str(exc))) from None
    log.info(
        "state_store",
        path=redact(str(paths.state)),
        feedback=redact(str(paths.feedback)),
        jti=redact(str(paths.jti)),
        kept=not no_state,
    )
    if allow_unauthenticated:
        log.warning("unauthenticated", detail="every caller is accepted: tests and demos only")
    if now_text:
        try:
            parse_now(now_text)
        except IntakeError as exc:
            raise click.BadParameter(exc.message, param_hint="--now") from None
        log.warning("fixed_clock", now=now_text, detail="every call is evaluated at this time")
    settings = ServiceSettings(
        config=str(config_path) if config_path else None,
        sites=site_configs,
        clients=str(clients) if clients else None,
        tokens=str(tokens) if tokens else None,
        allow_unauthenticated=allow_unauthenticated,
        allow_http_fhir=allow_http_fhir,
        public_url=public_url[0].rstrip("/") if public_url else None,
        cors_origins=cors_origins,
        max_body_bytes=max_body_bytes,
        feedback_db=str(paths.feedback),
        jti_db=str(paths.jti),
        system_actions=system_actions,
        fhir_timeout_s=fhir_timeout,
        now=now_text,
        log_level=root_log_level("info"),
        engine_processes=workers,
        state=None if no_state else str(paths.state),
        retention_days=retention_days,
        fhir_server=fhir_server.rstrip("/") if fhir_server else None,
        fhir_token=fhir_token,
        fhir_smart=fhir_smart,
        public_urls=tuple(url.rstrip("/") for url in public_url),
        max_token_lifetime_s=max_token_lifetime,
        fhir_allow=_origins(fhir_allow),
        fhir_max_bytes=fhir_max_bytes,
        delivered_keep_days=delivered_keep_days,
        outbox_lease_s=outbox_lease,
        feedback_keep_days=feedback_keep_days,
        call_deadline_s=call_deadline,
        shutdown_grace_s=shutdown_grace,
        header_timeout_s=header_timeout,
        body_timeout_s=body_timeout,
        max_connections=max_connections,
        max_resources=max_resources,
        max_facts_per_patient=max_facts_per_patient,
        metrics_token=_metrics_token(metrics_token, metrics_token_file),
    )
    try:  # check the files now: a mistake ends serve with one line, not N worker tracebacks
        Authenticator.from_settings(settings)
        outbox_auth(settings)
        config.log_overrides(config.load(config_path))  # a setting out of its range: no start
        for path in site_configs.values():  # every site's, likewise
            config.log_overrides(config.load(Path(path)))
    except (AuthSetupError, ValueError) as exc:
        error = click.ClickException(" ".join(str(exc).split()))
        error.exit_code = getattr(exc, "exit_code", 1)  # 2: a parameter outside its plausible range
        raise error from None
    settings.to_env()
    _ensure_descriptors(max_connections + 64 + 4 * workers)  # sockets, pipes, databases, logs
    server_config = uvicorn.Config(
        "redflags.service.app:app_from_env",
        factory=True,
        http=guarded_protocol(header_timeout, body_timeout, max_connections),
        host=host,
        port=port,
        access_log=False,  # the app logs each request as structlog JSON, with its request id
        log_level="warning",
        timeout_graceful_shutdown=shutdown_grace,  # type: ignore[arg-type]  # declared int, any number works
    )
    server = AnnouncingServer(server_config)
    with _metrics_folder():
        server.run(sockets=[listener])
    if not server.started:  # the app failed to start (its error is logged): as uvicorn.run does
        raise SystemExit(3)


def _store_paths(state: str | None, feedback: str | None, jti: str | None) -> StorePaths:
    """The three files, each as named or beside the state file (``redflags.state.location``).

    Deprecated, for one release (each said once in the log): without ``--state`` a state file
    the release before left in the working directory is still used while the state directory
    has none (history and outbox are not lost on upgrade); a jti file it kept beside
    ``--feedback-db`` is still used when ``--jti-db`` is not given (tokens already seen stay
    refused across the upgrade).
    """
    if state is None and Path(STATE_FILE).is_file() and not (default_folder() / STATE_FILE).exists():
        log.warning(
            "state_store_in_working_directory",
            path=STATE_FILE,
            detail=f"deprecated: pass --state, or move the redflags-*.sqlite files to {default_folder()}",
        )
        state = STATE_FILE
    paths = StorePaths.resolve(state, feedback, jti)
    if jti is None and feedback is not None:
        legacy = Path(feedback).parent / JTI_FILE
        if legacy != paths.jti and legacy.is_file():
            log.warning("jti_store_beside_feedback", path=str(legacy), detail="deprecated: pass --jti-db")
            paths = StorePaths(paths.state, paths.feedback, legacy)
    return paths


@contextlib.contextmanager
def _metrics_folder() -> Iterator[None]:
    """This run's metric folder (``redflags.metrics``): made before the engine processes start
    (they inherit its name), removed at exit, SIGTERM included (uvicorn ends with it re-raised:
    the handler here removes the folder, then dies of it as before)."""
    folder = tempfile.mkdtemp(prefix="redflags-metrics-")  # this run's only: no stale counts

    def remove_then_die(signum: int, _frame: object) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    previous = signal.signal(signal.SIGTERM, remove_then_die)
    metrics.enable(folder)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(folder, ignore_errors=True)


def _metrics_token(value: str | None, path: Path | None) -> str | None:
    """``--metrics-token`` (or its env variable) or ``--metrics-token-file``: one of them."""
    source = click.get_current_context().get_parameter_source("metrics_token")
    if value and source == click.core.ParameterSource.COMMANDLINE:
        log.warning("metrics_token_on_command_line", detail=f"visible in ps: use ${METRICS_TOKEN_ENV}")
    if path is None:
        return value or None
    if value:
        raise click.UsageError("give --metrics-token (or $REDFLAGS_METRICS_TOKEN) or --metrics-token-file")
    try:
        return read_token_file(path)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, param_hint="--metrics-token-file") from None


def _origins(texts: tuple[str, ...]) -> tuple[str, ...]:
    """``--fhir-allow`` values, checked now (a typo ends serve with one line)."""
    for text in texts:
        try:
            parse_origin(text)
        except UnsafeUrl as exc:
            raise click.BadParameter(f"{text!r} {exc}", param_hint="--fhir-allow") from None
    return texts


def _ensure_descriptors(needed: int) -> None:
    """Raise the soft limit on open files to what --max-connections needs, or say it is short."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            log.warning("few_descriptors", limit=target, needed=needed, detail="lower --max-connections")
