"""What a browser opens without an API key: the web UI at `/` (the static files of
`serve/web/`, under `/ui/`) and the API explorer at `/docs` (Swagger UI) and `/redoc`, whose
scripts come from the fastapi-offline package and are served from `/docs/assets/`, so that
both work with no network."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

WEB_DIR = Path(__file__).parent / "web"
DOCS_ASSETS = Path(fastapi_offline.__file__).parent / "static"
# The UI loads nothing but its own files, the images it is given and the service's answers.
_UI_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def install_pages(app: FastAPI) -> None:
    """Serve the web UI and the offline API explorer from `app` (the app's own `docs_url`
    and `redoc_url` must be None)."""
    app.mount("/ui", StaticFiles(directory=WEB_DIR), name="ui")
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")
    # Relative URLs: the pages work under any root path a proxy serves them from.
    openapi_url = (app.openapi_url or "/openapi.json").lstrip("/")

    @app.get("/", include_in_schema=False)
    def web_ui() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", headers={"content-security-policy": _UI_POLICY})

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url="docs/assets/swagger-ui-bundle.js",
            swagger_css_url="docs/assets/swagger-ui.css",
            swagger_favicon_url="docs/assets/favicon.png",
            oauth2_redirect_url=None,
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            redoc_js_url="docs/assets/redoc.standalone.js",
            redoc_favicon_url="docs/assets/favicon.png",
            with_google_fonts=False,
        )
