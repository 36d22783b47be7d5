"""`create_app(settings)`: the emulator's ASGI application (a thin front over FastAPI)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse
from starlette.types import Receive, Scope, Send

from emulator.config import EmulatorSettings
from emulator.requestlog import EmulatorFront
from emulator.routes import control, platform, queue, storage
from emulator.state import Emulator


def banner(emu: Emulator) -> str:
    knobs = emu.knobs
    keys = "any non-empty key" if knobs.keys is None else ", ".join(knobs.keys)
    base = emu.base_url
    return "\n".join(
        (
            f"fal emulator ready at {base}  (fast mode {'on' if emu.settings.fast else 'off'}, "
            f"concurrency {knobs.concurrency}, seed {emu.seed}, data {emu.settings.data_dir})",
            f"  admin key : {emu.admin_key}   (control: {base}/_emulator/state with "
            "'Authorization: Bearer <admin key>')",
            f"  FAL keys  : {keys}   ('Authorization: Key <key>')",
            f"  gateway   : point the fal queue, REST, CDN and platform base URLs at {base}",
        )
    )


DOCS_ASSETS_URL = "/_emulator/docs/assets"


def install_offline_docs(app: FastAPI) -> None:
    """``/_emulator/docs`` (Swagger UI) with its script and styles served by the emulator itself,
    from the ``fastapi-offline`` package's copies: FastAPI's default page loads them from a CDN,
    and this machine may have no internet."""
    assets = Path(str(files("fastapi_offline") / "static"))
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=assets), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} API",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        )

    app.add_api_route("/_emulator/docs", docs, include_in_schema=False)


def create_app(settings: EmulatorSettings, *, announce: bool = False) -> EmulatorFront:
    """The ASGI app: a thin pure-ASGI front (request log, the hot paths of the queue API and
    of the CDN's small files, dropped answers) before a FastAPI app for everything else. The
    front sits outside FastAPI because FastAPI's own per-request work (telemetry checks, routing)
    costs more than a submit."""
    emu = Emulator(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await emu.start()
        if announce:
            print(banner(emu), flush=True)
        # What exists now lives as long as the server. Frozen, the collector stops walking it on
        # every full collection (tens of ms each, which a client saw as a stalled answer).
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await emu.stop()

    app = FastAPI(
        title="Foley fal emulator",
        description="A local stand-in for fal's queue API. See docs/emulator.md.",
        lifespan=lifespan,
        docs_url=None,  # served offline below
        redoc_url=None,
        openapi_url="/_emulator/openapi.json",
    )
    app.state.emu = emu
    install_offline_docs(app)
    app.include_router(control.router)
    app.include_router(storage.router)
    app.include_router(platform.router)
    app.include_router(queue.router)  # last: its catch-all answers 404/405

    async def fast_path(scope: Scope, receive: Receive, send: Send) -> bool:
        return await queue.dispatch(emu, scope, receive, send) or await storage.serve_small_file(
            emu, scope, receive, send
        )

    return EmulatorFront(app, log=emu.requests, fast_path=fast_path)
