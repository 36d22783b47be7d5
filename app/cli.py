"""The `foley` command.

`foley up` is the whole product on one machine with no configuration; `api`, `worker`,
`migrate` are the production pieces (one image, one command each); `tenants` and `keys` are the
operator's tools; `emulator` runs the fal stand-in on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Annotated

import httpx
import typer
from pydantic import SecretStr

from app.config import Environment, Settings, get_settings
from app.logging import configure_logging

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Foley: a self-hosted gateway to fal.ai's video-to-audio models.",
)
tenants_cli = typer.Typer(
    no_args_is_help=True, help="Tenants: create, list, budgets, limits, suspension."
)
keys_cli = typer.Typer(no_args_is_help=True, help="Create, rotate and revoke tenants' API keys.")
prices_cli = typer.Typer(no_args_is_help=True, help="Model prices (data, with effective dates).")
usage_cli = typer.Typer(no_args_is_help=True, help="Usage: reconcile the ledger with fal.")
cli.add_typer(tenants_cli, name="tenants")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(prices_cli, name="prices")
cli.add_typer(usage_cli, name="usage")

EMULATOR_KEY = "emulator-key"


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _database_url(settings: Settings) -> str:
    from app.db.engine import resolve_database_url

    return resolve_database_url(settings)


# --- production pieces -----------------------------------------------------------------------


@cli.command()
def migrate(
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
    downgrade: Annotated[bool, typer.Option(help="Downgrade to --revision instead.")] = False,
) -> None:
    """Bring the database schema to the migrations' head (or a given revision)."""
    from app.db import migrate as migrations

    settings = _settings()
    url = _database_url(settings)
    if downgrade:
        migrations.downgrade(url, revision)
    else:
        migrations.upgrade(url, revision)
    typer.echo(f"database at {revision}")


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (run `foley migrate` first; `foley worker` does the upstream work)."""
    import uvicorn

    settings = _settings()
    if settings.uses_embedded_db:
        # Resolve once here so every uvicorn worker process joins the same embedded server.
        os.environ["FOLEY_DATABASE_URL"] = _database_url(settings)
    _exit_cleanly_on_sigterm()
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        log_level=settings.log_level.lower(),
    )


@cli.command()
def worker() -> None:
    """Run a worker: claims jobs, talks to fal, stores results. Run as many as you like."""
    settings = _settings()
    # The default loop, not uvloop: under uvloop a streamed download can hold ~8 MiB it has
    # read but not yet consumed (bench/README.md, media), per download in flight.
    asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT, or until ``stop`` is set (then the caller, e.g.
    `foley up`'s uvicorn, owns the signals)."""
    from app.db.engine import create_engine, resolve_database_url
    from app.files.storage import storage_from_settings
    from app.kit.process import freeze_startup_heap
    from app.upstream.fal import FalClient, FalTimeouts, build_http_client
    from app.worker.runner import Worker

    if settings.fal_key is None:
        raise typer.BadParameter(
            "FAL_KEY is not set (or use `foley up`, which starts the emulator)"
        )
    url = await asyncio.to_thread(resolve_database_url, settings)
    engine = create_engine(url, pool_size=settings.worker_concurrency + 4)
    timeouts = FalTimeouts(
        connect=settings.upstream_connect_timeout.total_seconds(),
        read=settings.upstream_read_timeout.total_seconds(),
    )
    http = build_http_client(timeouts)
    fal = FalClient(
        settings.fal_key.get_secret_value(),
        queue_url=settings.fal_queue_url,
        rest_url=settings.fal_rest_url,
        cdn_url=settings.fal_cdn_url,
        timeouts=timeouts,
        http=http,
    )
    w = Worker(settings, engine, fal, storage_from_settings(settings))
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
        await w.run()
    finally:
        if stop is not None:
            stopper.cancel()
        await http.aclose()
        await engine.dispose()


async def _stop_when(event: asyncio.Event, w: object) -> None:
    await event.wait()
    w.stop()  # type: ignore[attr-defined]


# --- operator tools -------------------------------------------------------------------------


def _with_session(fn):  # type: ignore[no-untyped-def]
    async def runner(*args):  # type: ignore[no-untyped-def]
        from app.db.engine import create_engine, create_sessionmaker, unit_of_work

        settings = _settings()
        engine = create_engine(await asyncio.to_thread(_database_url, settings), pool_size=1)
        try:
            async with unit_of_work(create_sessionmaker(engine)) as session:
                return await fn(session, *args)
        finally:
            await engine.dispose()

    return runner


@tenants_cli.command("create")
def tenants_create(name: str) -> None:
    """Create a tenant; prints its id."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.create_tenant(session, name, actor=_cli_actor())

    tenant = asyncio.run(_with_session(go)())
    typer.echo(f"{tenant.id}\t{tenant.name}")


@tenants_cli.command("list")
def tenants_list() -> None:
    """List tenants: id, name, created."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.list_tenants(session)

    for t in asyncio.run(_with_session(go)()):
        typer.echo(f"{t.id}\t{t.name}\t{t.created_at:%Y-%m-%d %H:%M}")


def _update_tenant(tenant_id: uuid.UUID, **fields: object) -> None:
    from app.tenants import service
    from app.tenants.schemas import TenantOut, TenantUpdate

    patch = TenantUpdate(**fields)

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.update_tenant(session, tenant_id, patch, actor=_cli_actor())

    tenant = asyncio.run(_with_session(go)())
    typer.echo(TenantOut.of(tenant).model_dump_json(indent=2))


def _cli_actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


@tenants_cli.command("budget")
def tenants_budget(
    tenant_id: uuid.UUID,
    usd: Annotated[str | None, typer.Option(help='Budget in USD, e.g. "25.00".')] = None,
    period: Annotated[str | None, typer.Option(help="'month' or a duration ('30d').")] = None,
    thresholds: Annotated[str | None, typer.Option(help="Percentages, e.g. 50,80,100.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the budget.")] = False,
) -> None:
    """Set, change or remove a tenant's budget."""
    fields: dict[str, object] = {}
    if remove:
        fields["budget_usd"] = None
    elif usd is not None:
        fields["budget_usd"] = usd
    if period is not None:
        fields["budget_period"] = period
    if thresholds is not None:
        fields["budget_thresholds"] = [int(x) for x in thresholds.split(",") if x.strip()]
    _update_tenant(tenant_id, **fields)


@tenants_cli.command("limits")
def tenants_limits(
    tenant_id: uuid.UUID,
    rate_per_minute: Annotated[int | None, typer.Option(help="Job creations per minute.")] = None,
    max_in_flight: Annotated[int | None, typer.Option(help="Requests at fal at once.")] = None,
    weight: Annotated[float | None, typer.Option(help="Share of the fal account.")] = None,
) -> None:
    """Set a tenant's rate limit, in-flight cap and fair-share weight."""
    fields: dict[str, object] = {}
    if rate_per_minute is not None:
        fields["rate_limit_per_minute"] = rate_per_minute
    if max_in_flight is not None:
        fields["max_in_flight"] = max_in_flight
    if weight is not None:
        fields["weight"] = weight
    _update_tenant(tenant_id, **fields)


@tenants_cli.command("suspend")
def tenants_suspend(
    tenant_id: uuid.UUID,
    resume: Annotated[bool, typer.Option("--resume", help="Lift the suspension.")] = False,
) -> None:
    """Refuse the tenant's new jobs (running ones finish), or --resume."""
    _update_tenant(tenant_id, suspended=not resume)


@keys_cli.command("rotate")
def keys_rotate(
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    grace: Annotated[int, typer.Option(help="Seconds the old key keeps working.")] = 3600,
) -> None:
    """Issue a new key; the old one expires after the grace period."""
    from datetime import timedelta

    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.rotate_api_key(
            session, tenant_id, key_id, grace=timedelta(seconds=grace), actor=_cli_actor()
        )

    old, new, secret = asyncio.run(_with_session(go)())
    typer.echo(f"old key {old.id} expires at {old.expires_at}\nnew key id {new.id}\n{secret}")


@prices_cli.command("list")
def prices_list(model: Annotated[str | None, typer.Option()] = None) -> None:
    """Every price row: model, unit, USD per unit, effective from."""
    from app.kit.money import micros_to_usd
    from app.usage import prices

    async def go(session):  # type: ignore[no-untyped-def]
        return await prices.list_prices(session, model)

    for p in asyncio.run(_with_session(go)()):
        typer.echo(
            f"{p.model}\t{p.unit}\t{micros_to_usd(p.unit_price_micros)}\t"
            f"{p.effective_from.isoformat()}"
        )


@prices_cli.command("set")
def prices_set(
    model: str,
    unit: Annotated[str, typer.Option(help="video | compute_second | output_second")],
    usd: Annotated[str, typer.Option(help='Price per unit in USD, e.g. "0.035".')],
    effective_from: Annotated[str | None, typer.Option(help="ISO 8601; default now.")] = None,
) -> None:
    """Add a price from a date on (prices are never edited in place)."""
    from datetime import datetime

    from app.kit.money import usd_to_micros
    from app.usage import prices

    when = datetime.fromisoformat(effective_from) if effective_from else None

    async def go(session):  # type: ignore[no-untyped-def]
        return await prices.add_price(
            session,
            model=model,
            unit=unit,
            unit_price_micros=usd_to_micros(usd),
            effective_from=when,
            actor=_cli_actor(),
        )

    p = asyncio.run(_with_session(go)())
    typer.echo(f"price {p.id}: {model} {usd} USD/{unit} from {p.effective_from.isoformat()}")


@usage_cli.command("reconcile")
def usage_reconcile(
    start: Annotated[str, typer.Option("--from", help="ISO date or time (UTC).")],
    end: Annotated[str, typer.Option("--to", help="ISO date or time (UTC), exclusive.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Compare the ledger with fal's billing events; exit 1 when they differ."""
    import json as jsonlib

    report = asyncio.run(_reconcile(start, end))
    if as_json:
        typer.echo(jsonlib.dumps(report.to_dict(), indent=2))
    else:
        d = report.to_dict()
        typer.echo(
            f"{d['from']} → {d['to']}: ledger {d['ledger_requests']} requests "
            f"{d['ledger_total_usd']} USD; fal {d['fal_requests']} requests "
            f"{d['fal_total_usd']} USD"
        )
        for diff in report.differences:
            typer.echo(
                f"  {diff.kind:18} {diff.request_id}  {diff.model or '-'}  "
                f"ledger={diff.ledger_usd or '-'} fal={diff.fal_usd or '-'}"
            )
        typer.echo("no differences" if report.ok else f"{len(report.differences)} differences")
    raise typer.Exit(0 if report.ok else 1)


async def _reconcile(start: str, end: str):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta

    from app.db.engine import create_engine, create_sessionmaker
    from app.usage.reconcile import fetch_billing_events, reconcile

    def instant(s: str) -> datetime:
        value = datetime.fromisoformat(s)
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    settings = _settings()
    key = settings.fal_admin_key or settings.fal_key
    if key is None:
        raise typer.BadParameter("set FOLEY_FAL_ADMIN_KEY (or FAL_KEY) to read fal's usage")
    lo, hi = instant(start), instant(end)
    slack = timedelta(hours=2)  # fal stamps completion, we stamp submission
    async with httpx.AsyncClient(timeout=30) as http:
        events = await fetch_billing_events(
            http, settings.fal_platform_url, key.get_secret_value(), lo - slack, hi + slack
        )
    engine = create_engine(await asyncio.to_thread(_database_url, settings), pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session:
            return await reconcile(session, events, lo, hi)
    finally:
        await engine.dispose()


@keys_cli.command("create")
def keys_create(
    tenant_id: uuid.UUID,
    name: Annotated[str | None, typer.Option(help="A label.")] = None,
    read_only: Annotated[bool, typer.Option("--read-only", help="GET only.")] = False,
) -> None:
    """Create an API key for a tenant; prints the secret (shown this once)."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.create_api_key(
            session, tenant_id, name, read_only=read_only, actor=_cli_actor()
        )

    key, secret = asyncio.run(_with_session(go)())
    typer.echo(f"key id {key.id}\n{secret}")


@keys_cli.command("revoke")
def keys_revoke(tenant_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke an API key at once."""
    from app.tenants import service

    async def go(session):  # type: ignore[no-untyped-def]
        return await service.revoke_api_key(session, tenant_id, key_id, actor=_cli_actor())

    key = asyncio.run(_with_session(go)())
    typer.echo(f"revoked {key.id} at {key.revoked_at}")


# --- the emulator and the all-in-one ----------------------------------------------------------


def _emulator_command() -> None:
    from emulator.cli import main as emulator_main

    cli.command(
        "emulator",
        help="Run the fal emulator (a local stand-in for fal's queue API). See docs/emulator.md.",
    )(emulator_main)


_emulator_command()


def _exit_cleanly_on_sigterm() -> None:
    """uvicorn re-raises the signal that stopped it. With the default SIGTERM action that kills
    the process before `finally` blocks and exit handlers run, leaving the embedded Postgres and
    the emulator behind; exiting through SystemExit lets them stop."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def _free_port(host: str, preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind((host, preferred))
            return preferred
        except OSError:
            s.bind((host, 0))
            return int(s.getsockname()[1])


def _persisted_secret(path: Path, prefix: str = "") -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = prefix + secrets.token_urlsafe(24)
    path.write_text(value)
    path.chmod(0o600)
    return value


def _die_with_parent() -> None:
    """Linux: the emulator gets SIGTERM if `foley up` dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start_emulator(settings: Settings, host: str, port: int) -> subprocess.Popen[bytes]:
    data_dir = Path(settings.data_dir) / "emulator"
    log_path = Path(settings.data_dir) / "emulator.log"
    log_file = log_path.open("ab")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [
            sys.executable,
            "-m",
            "emulator",
            "--host",
            host,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )
    base = f"http://{host}:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise typer.Exit(f"the emulator exited at start; see {log_path}")  # type: ignore[arg-type]
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/.well-known/jwks.json", timeout=1).status_code == 200:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise typer.Exit(f"the emulator did not start; see {log_path}")  # type: ignore[arg-type]


@cli.command()
def up(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.")] = 8000,
    emulator_port: Annotated[int, typer.Option(help="Port of the fal emulator.")] = 8765,
) -> None:
    """Everything in one process for development: embedded Postgres, migrations, the API, a
    worker, and (when FAL_KEY is unset) the fal emulator. Prints an admin token, a tenant key and
    a curl command that runs a sample video through."""
    import uvicorn

    from app.db import migrate as migrations
    from app.media.samples import ensure_sample_video

    base_settings = _settings()
    data_dir = Path(base_settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, object] = {}
    emulator_proc = None
    if base_settings.fal_key is None:
        emulator_port = _free_port(host, emulator_port)
        emulator_proc = _start_emulator(base_settings, host, emulator_port)
        emu = f"http://{host}:{emulator_port}"
        overrides.update(
            fal_key=SecretStr(EMULATOR_KEY),
            fal_queue_url=emu,
            fal_rest_url=emu,
            fal_cdn_url=emu,
            fal_platform_url=f"{emu}/v1",
        )
    public = base_settings.public_url or f"http://{host}:{port}"
    overrides["public_url"] = public
    if base_settings.admin_token is None:
        overrides["admin_token"] = SecretStr(_persisted_secret(data_dir / "admin_token", "fa_"))
    if base_settings.env is Environment.production:
        raise typer.BadParameter("`foley up` is for development; run api and worker instead")
    settings = base_settings.model_copy(update=overrides)
    url = _database_url(settings)
    settings = settings.model_copy(update={"database_url": url})
    migrations.upgrade(url)
    demo_key = asyncio.run(_demo_key(settings))
    sample = ensure_sample_video(data_dir / "samples")

    from starlette.staticfiles import StaticFiles

    from app.main import create_app

    app = create_app(settings)
    # Development only: the sample video, where the (local) emulator can fetch it.
    app.mount("/samples", StaticFiles(directory=sample.parent), name="samples")
    admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
    _print_banner(
        host,
        port,
        admin,
        demo_key,
        f"{public}/samples/{sample.name}",
        emulator=f"http://{host}:{emulator_port}" if emulator_proc else None,
    )

    async def serve() -> None:
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
        stop = asyncio.Event()
        worker_task = asyncio.create_task(_run_worker(settings, stop))
        try:
            await server.serve()
        finally:
            stop.set()
            await worker_task

    _exit_cleanly_on_sigterm()
    try:
        asyncio.run(serve())
    finally:
        if emulator_proc is not None:
            emulator_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                emulator_proc.wait(5)


async def _demo_key(settings: Settings) -> str:
    """The demo tenant's key, created on first start and kept in the data directory
    (development only: a real deployment never stores a key's secret)."""
    from app.db.engine import create_engine, create_sessionmaker, unit_of_work
    from app.tenants import service

    path = Path(settings.data_dir) / "demo_key"
    engine = create_engine(settings.database_url or "", pool_size=1)
    try:
        async with unit_of_work(create_sessionmaker(engine)) as session:
            if path.exists():
                from sqlalchemy import select

                from app.auth.keys import hash_api_key
                from app.models import ApiKey

                secret = path.read_text().strip()
                found = await session.scalar(
                    select(ApiKey.id).where(
                        ApiKey.key_hash == hash_api_key(secret), ApiKey.revoked_at.is_(None)
                    )
                )
                if found is not None:
                    return secret
            tenant = await service.create_tenant(session, "demo")
            _, secret = await service.create_api_key(session, tenant.id, "foley up")
        path.write_text(secret)
        path.chmod(0o600)
        return secret
    finally:
        await engine.dispose()


def _print_banner(
    host: str, port: int, admin: str, key: str, sample_url: str, emulator: str | None
) -> None:
    base = f"http://{host}:{port}"
    upstream = f"fal emulator at {emulator}" if emulator else "fal (FAL_KEY is set)"
    body = (
        '{"model":"thinksound","input":{"video_url":"' + sample_url + '","prompt":"a ball '
        'bouncing on a wooden floor"}}'
    )
    typer.echo(f"""
Foley is up.
  API docs     {base}/docs
  upstream     {upstream}
  admin token  {admin}
  tenant key   {key}

Run the sample video through ThinkSound and show the finished job:

  JOB=$(curl -s {base}/v1/jobs -H 'Authorization: Bearer {key}' \\
    -H 'Content-Type: application/json' -d '{body}' \\
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'); \\
  sleep 8; curl -s {base}/v1/jobs/$JOB -H 'Authorization: Bearer {key}' | python3 -m json.tool
""")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
