"""``/docs`` (Swagger UI) and ``/redoc`` served entirely by the gateway: their scripts, styles and
icon come from the ``fastapi-offline`` package's copies (Swagger UI 5, which renders OpenAPI 3.1,
and ReDoc), under ``/docs/assets``; no CDN, no web fonts. FastAPI's own pages load all of it from
CDNs and Google Fonts, so they were blank without internet. (``swagger-ui-bundle`` on PyPI ships
Swagger UI 4.15, which cannot render OpenAPI 3.1.) ReDoc's bundle shows a Redocly logo it loads
from Redocly's CDN: the bundle is served with that one URL pointing at the gateway's icon."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, Response

ASSETS_URL = "/docs/assets"
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


@cache
def _redoc_bundle() -> bytes:
    # Read on first use, not at start-up: ~1 MB that most processes never serve.
    bundle = (ASSETS_DIR / "redoc.standalone.js").read_bytes()
    return bundle.replace(REDOC_LOGO.encode(), f"{ASSETS_URL}/favicon.png".encode())


def install_docs(app: FastAPI) -> None:
    """Call with ``FastAPI(docs_url=None, redoc_url=None)``."""

    # Before the mount: routes match in order.
    @app.get(f"{ASSETS_URL}/redoc.standalone.js", include_in_schema=False)
    async def redoc_bundle() -> Response:
        return Response(
            _redoc_bundle(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")

    async def page(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        openapi, assets, title = f"{root}{app.openapi_url}", f"{root}{ASSETS_URL}", app.title
        if request.scope["path"].endswith("/redoc"):
            return get_redoc_html(
                openapi_url=openapi,
                title=f"{title} API",
                redoc_js_url=f"{assets}/redoc.standalone.js",
                redoc_favicon_url=f"{assets}/favicon.png",
                with_google_fonts=False,
            )
        return get_swagger_ui_html(
            openapi_url=openapi,
            title=f"{title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
        )

    app.add_api_route("/docs", page, include_in_schema=False)
    app.add_api_route("/redoc", page, include_in_schema=False)
