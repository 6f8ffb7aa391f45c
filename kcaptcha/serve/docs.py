"""The API docs, offline: Swagger UI at `/docs` and ReDoc at `/redoc`, from the files that the
`fastapi-offline` package ships (no CDN). ReDoc's bundle names its maker's logo on a CDN: it is served
with that address blanked (the logo is then left out), so the pages ask nothing of any other server, and a
Content-Security-Policy keeps it so should a later bundle name another."""

import importlib.resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
REDOC_JS_URL = f"{ASSETS_URL}/redoc.offline.js"
OUTSIDE_ASSETS = ("https://cdn.redoc.ly/redoc/logo-mini.svg",)  # loaded by ReDoc's bundle, not just linked
POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'")


def add_offline_docs(app: FastAPI) -> None:
    """Adds `/docs`, `/redoc` and their assets to an app made with `docs_url=None, redoc_url=None`."""
    assets = importlib.resources.files("fastapi_offline") / "static"
    redoc_js = (assets / "redoc.standalone.js").read_text(encoding="utf-8")
    for address in OUTSIDE_ASSETS:
        redoc_js = redoc_js.replace(address, "")

    @app.get(REDOC_JS_URL, include_in_schema=False)
    async def redoc_bundle():  # before the mount below, which would answer the path otherwise
        return Response(redoc_js, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

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
                              redoc_js_url=REDOC_JS_URL, redoc_favicon_url=favicon,
                              with_google_fonts=False)
        page.headers["Content-Security-Policy"] = POLICY
        return page
