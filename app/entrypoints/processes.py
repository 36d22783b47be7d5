"""The production processes, one image and one command each: `foley migrate`, `foley api`,
`foley worker`, and `foley emulator` (the fal stand-in on its own)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Annotated

import typer

from app.config import Settings
from app.entrypoints.settings import database_url, load_settings

# The emulator's own command line (emulator/cli.py), so that the one image runs it too. The
# emulator never imports app; this import is the only way between the two.
from emulator.cli import main as emulator

EMULATOR_HELP = "Run the fal emulator (a local stand-in for fal's queue API). See docs/emulator.md."

__all__ = ["EMULATOR_HELP", "api", "emulator", "exit_cleanly_on_sigterm", "migrate", "run_worker"]


def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to --revision instead.")] = False,
) -> None:
    """Bring the database schema to the migrations' head (or a given revision)."""
    from app.db import migrate as migrations

    settings = load_settings()
    url = database_url(settings)
    if downgrade:
        migrations.downgrade(url, revision)
    else:
        migrations.upgrade(url, revision)
    typer.echo(f"database at {revision}")


def api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (run `foley migrate` first; `foley worker` does the upstream work)."""
    import uvicorn

    from app.entrypoints.http import with_deadlines

    settings = load_settings()
    if settings.uses_embedded_db:
        # Resolve once here so every uvicorn worker process joins the same embedded server.
        os.environ["FOLEY_DATABASE_URL"] = database_url(settings)
    exit_cleanly_on_sigterm()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_level=settings.log_level.lower(),
        http=with_deadlines(
            head_s=settings.http_head_timeout.total_seconds(),
            body_s=settings.http_body_timeout.total_seconds(),
        ),
    )


def worker() -> None:
    """Run a worker: claims jobs, talks to fal, stores results. Run as many as you like."""
    settings = load_settings()
    # The default loop, not uvloop: under uvloop a streamed download can hold ~8 MiB it has
    # read but not yet consumed (bench/README.md, media), per download in flight.
    asyncio.run(run_worker(settings))


async def run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT, or until ``stop`` is set (then the caller, e.g.
    `foley up`'s uvicorn, owns the signals)."""
    from app.db.engine import create_engine, resolve_database_url
    from app.jobs.steps.context import platform_key
    from app.kit.process import freeze_startup_heap
    from app.storage import storage_from_settings
    from app.telemetry import tracing
    from app.upstream.fal import FalClient, FalTimeouts, build_http_client
    from app.upstream.platform import PlatformClient
    from app.worker.runner import Worker

    tracing.configure("foley-worker")
    if settings.fal_key is None:
        raise typer.BadParameter(
            "FAL_KEY is not set (or use `foley up`, which starts the emulator)"
        )
    url = await asyncio.to_thread(resolve_database_url, settings)
    # A step holds a session or a raw connection at a time; the LISTEN connection, the claims,
    # the heartbeat, the status streams' writes and housekeeping share the rest.
    engine = create_engine(url, pool_size=2 * settings.worker_concurrency + 8)
    timeouts = FalTimeouts(
        connect=settings.upstream_connect_timeout.total_seconds(),
        read=settings.upstream_read_timeout.total_seconds(),
    )
    # Each followed status stream holds a connection of its own, beside the steps' requests.
    streams = settings.status_streams_max if settings.status_streams else 0
    http = build_http_client(timeouts, max_connections=100 + streams)
    fal = FalClient(
        settings.fal_key.get_secret_value(),
        queue_url=settings.fal_queue_url,
        rest_url=settings.fal_rest_url,
        cdn_url=settings.fal_cdn_url,
        timeouts=timeouts,
        http=http,
    )
    key = platform_key(settings)
    platform = PlatformClient(http, settings.fal_platform_url, key) if key else None
    w = Worker(settings, engine, fal, storage_from_settings(settings), platform=platform)
    loop = asyncio.get_running_loop()
    if stop is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, w.stop)
        # A process of its own (under `foley up` the API's lifespan does this).
        freeze_startup_heap()
    else:
        stopper = loop.create_task(_stop_when(stop, w))
    try:
        await w.run(shutdown_grace_s=settings.worker_shutdown_grace.total_seconds())
    finally:
        if stop is not None:
            stopper.cancel()
        await http.aclose()
        await engine.dispose()


async def _stop_when(event: asyncio.Event, w: object) -> None:
    await event.wait()
    w.stop()  # type: ignore[attr-defined]


def exit_cleanly_on_sigterm() -> None:
    """uvicorn re-raises the signal that stopped it. With the default SIGTERM action that kills
    the process before `finally` blocks and exit handlers run, leaving the embedded Postgres and
    the emulator behind; exiting through SystemExit lets them stop."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
