"""The API docs, offline: Swagger UI at `/docs` and ReDoc at `/redoc`, from the files that the
`fastapi-offline` package ships (no CDN), under a Content-Security-Policy that lets the pages load nothing
from anywhere but this server (ReDoc would otherwise fetch its maker's logo from a CDN)."""

import importlib.resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def add_offline_docs(app: FastAPI) -> None:
    """Adds `/docs`, `/redoc` and their assets to an app made with `docs_url=None, redoc_url=None`."""
    assets = importlib.resources.files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    favicon = f"{ASSETS_URL}/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui():
        page = get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_URL}/swagger-ui.css", swagger_favicon_url=favicon,
                                   swagger_ui_parameters={"validatorUrl": None})  # no call to a validator
        page.headers["Content-Security-Policy"] = POLICY
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc():
        page = get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - API reference",
                              redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js", redoc_favicon_url=favicon,
                              with_google_fonts=False)
        page.headers["Content-Security-Policy"] = POLICY
        return page
