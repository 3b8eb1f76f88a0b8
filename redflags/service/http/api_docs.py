"""``/docs`` (Swagger UI) and ``/redoc`` from assets in the installed package, so the API can
be tried from a browser on an air-gapped hospital network.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (a blank page without internet) and a
favicon from fastapi.tiangolo.com. Here every asset comes from the ``fastapi-offline`` package
(Swagger UI 5, which reads OpenAPI 3.1; MIT/Apache-2.0), served under ``ASSETS``. The bearer
security schemes are declared by the authentication dependencies themselves
(``redflags.service.auth.callers``), so Swagger UI's "Authorize" sends the token with "Try it out".
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

#: Where the Swagger UI / ReDoc files are served from (local URLs only).
ASSETS = "/docs/assets"
STATIC_DIR = Path(fastapi_offline.__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Serve the docs pages and their assets from the package (APP built with ``docs_url=None,
    redoc_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=STATIC_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
