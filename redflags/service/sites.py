"""Several sites in one service: ``/sites/{name}/cds-services/...`` and ``/sites/{name}/fhir/$evaluate``.

``redflags serve --site NAME=FILE`` (repeatable) serves each site's configuration (thresholds,
local codes) from the same engine processes: each compiles every site's rules once, a durable
ruleset per configuration (docs/engine.md#several-configurations-in-one-process).

The site is chosen by a path prefix, not a header: a CDS Hooks client is configured with one
discovery URL and sends no headers of its own choosing, and the JWT audience is the URL called,
so a token issued for one site's URL is refused by another's. ``SitePrefix`` sets the site of
the request (``current``) and hands the rest of the path to the ordinary routes, so every site
answers exactly as the single-site service does. An unknown site is a 404 OperationOutcome
naming the sites; with sites and no ``--config``, so is an unprefixed evaluation path: a call
sent to the wrong URL must not be evaluated silently under the default thresholds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from contextvars import ContextVar

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.logger import bound_contextvars
from redflags.service.http.outcome import media_type_for, outcome
from redflags.state.model import StateStore
from redflags.stateful import Memory

#: A site's name: a path segment without escaping (letters, digits, ``-`` and ``_``).
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
PREFIX = "/sites"
#: The paths a site serves under its prefix; health, metrics and docs stay shared.
SITE_PATHS = ("/cds-services", "/fhir/")

_site: ContextVar[str | None] = ContextVar("redflags_site", default=None)


def current() -> str | None:
    """The site of the request being served (None: the unprefixed, single-site paths)."""
    return _site.get()


class SiteError(ValueError):
    """A ``--site`` value that cannot be served; the message is one line."""


def parse_sites(values: Sequence[str]) -> dict[str, str]:
    """``NAME=FILE`` values (``--site``), by name, in the order given."""
    sites: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not path:
            raise SiteError(f"--site {value!r}: expected NAME=FILE (a site's TOML configuration)")
        if not SITE_NAME.fullmatch(name):
            raise SiteError(f"--site {value!r}: a site name is 1-64 letters, digits, '-' or '_'")
        if name in sites:
            raise SiteError(f"--site {name!r} is given twice")
        sites[name] = path
    return sites


def site_tenant(tenant: str, site: str) -> str:
    """A site's tenant: what the service keeps for one site (history, alert ledger, outbox) is
    never read or withdrawn by another site's rules evaluating the same caller's patient."""
    return f"{tenant} site:{site}"


class SiteMemory(Memory):
    """A site's view of the shared state store: every tenant qualified by the site (``site_tenant``)."""

    def __init__(self, store: StateStore, site: str, **kwargs: object) -> None:
        super().__init__(store, **kwargs)  # type: ignore[arg-type]  # Memory's own keywords
        self.site = site

    def tenant_of(self, tenant: str | None) -> str:
        return site_tenant(super().tenant_of(tenant), self.site)


def _refusal(status: int, message: str, path: str) -> JSONResponse:
    return JSONResponse(outcome(message, "not-found"), status_code=status, media_type=media_type_for(path))


class SitePrefix:
    """Route ``/sites/{name}/...`` to the ordinary routes with the site set (see the module docstring)."""

    def __init__(self, app: ASGIApp, sites: Sequence[str], unprefixed: bool) -> None:
        """``unprefixed``: the paths without a prefix serve the ``--config`` site too."""
        self.app = app
        self.sites = frozenset(sites)
        self.names = ", ".join(sites)
        self.unprefixed = unprefixed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.sites:
            await self.app(scope, receive, send)
            return
        root = scope.get("root_path", "")
        path: str = scope["path"]
        path = path[len(root) :] if root and path.startswith(root) else path
        if path in (PREFIX, PREFIX + "/") and scope["method"] == "GET":
            await self._listing(scope, receive, send)
            return
        if not path.startswith(PREFIX + "/"):
            if not self.unprefixed and path.startswith(SITE_PATHS):
                message = f"this service serves several sites ({self.names}): call {PREFIX}/{{site}}{path}"
                await _refusal(404, message, path)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        name, _, rest = path[len(PREFIX) + 1 :].partition("/")
        rest = "/" + rest
        if name not in self.sites:
            shown = name if SITE_NAME.fullmatch(name) else "(not a site name)"
            message = f"no site {shown!r}: this service serves {self.names}"
            await _refusal(404, message, rest)(scope, receive, send)
            return
        if not rest.startswith(SITE_PATHS):
            message = f"site {name!r} serves {PREFIX}/{name}/cds-services and {PREFIX}/{name}/fhir/$evaluate"
            await _refusal(404, message, rest)(scope, receive, send)
            return
        token = _site.set(name)
        try:
            with bound_contextvars(site=name):
                # as a mounted app: the routes match the path after root_path; the URL (and so
                # the JWT audience) stays the one called
                await self.app({**scope, "root_path": f"{root}{PREFIX}/{name}"}, receive, send)
        finally:
            _site.reset(token)

    async def _listing(self, scope: Scope, receive: Receive, send: Send) -> None:
        sites = [
            {
                "name": name,
                "cds-services": f"{PREFIX}/{name}/cds-services",
                "evaluate": f"{PREFIX}/{name}/fhir/$evaluate",
            }
            for name in sorted(self.sites)
        ]
        await JSONResponse({"sites": sites})(scope, receive, send)
