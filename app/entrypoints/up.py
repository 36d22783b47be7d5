"""`foley up`: the whole product on one machine with no configuration (embedded Postgres,
migrations, the API and a worker in one process, and the fal emulator beside it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from pydantic import SecretStr

from app.config import Environment, Settings
from app.entrypoints.errors import CliError
from app.entrypoints.processes import run_worker
from app.entrypoints.settings import database_url, load_settings

EMULATOR_KEY = "emulator-key"
# Where `foley up` records the emulator it started, for the operator's commands
# (`foley usage reconcile` reads fal's usage from it).
EMULATOR_RECORD = "emulator.json"


def up(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the API.", envvar="FOLEY_PORT")] = 8000,
    emulator_port: Annotated[int, typer.Option(help="Port of the fal emulator.")] = 8765,
) -> None:
    """Everything in one process for development: embedded Postgres, migrations, the API, a
    worker, and (when FAL_KEY is unset) the fal emulator. Prints an admin token, a tenant key and
    a curl command that runs a sample video through. SIGTERM or SIGINT (Ctrl-C) stops it
    gracefully, with exit status 0."""
    import uvicorn

    from app.db import migrate as migrations
    from app.entrypoints.http import with_deadlines
    from app.media.samples import ensure_sample_video

    # The API's port first: taken, nothing else is started and no banner promises an API.
    api_socket = _bind(host, port)
    base_settings = load_settings()
    data_dir = Path(base_settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, object] = {}
    emulator_proc = None
    if base_settings.fal_key is None:
        emulator_port = _free_port(host, emulator_port)
        emulator_proc = _start_emulator(base_settings, host, emulator_port)
        emu = f"http://{host}:{emulator_port}"
        record_emulator(data_dir, f"{emu}/v1")
        overrides.update(
            fal_key=SecretStr(EMULATOR_KEY),
            fal_queue_url=emu,
            fal_rest_url=emu,
            fal_cdn_url=emu,
            fal_platform_url=f"{emu}/v1",
        )
        recorded = recorded_emulator(data_dir)
        if recorded is not None and base_settings.fal_admin_key is None:
            # Its platform API (billing, request lookups) takes the emulator's admin key, as
            # fal's takes an admin-scope key: the console's reconcile, the worker's lookups.
            overrides["fal_admin_key"] = recorded[1]
    public = base_settings.public_url or f"http://{host}:{port}"
    overrides["public_url"] = public
    if base_settings.admin_token is None:
        overrides["admin_token"] = SecretStr(_persisted_secret(data_dir / "admin_token", "fa_"))
    if base_settings.env is Environment.production:
        raise typer.BadParameter("`foley up` is for development; run api and worker instead")
    settings = base_settings.model_copy(update=overrides)
    url = database_url(settings)
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
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                http=with_deadlines(
                    head_s=settings.http_head_timeout.total_seconds(),
                    body_s=settings.http_body_timeout.total_seconds(),
                ),
            )
        )
        stop = asyncio.Event()
        worker_task = asyncio.create_task(run_worker(settings, stop))
        try:
            await server.serve(sockets=[api_socket])
        finally:
            stop.set()
            await worker_task

    exit_zero_on_stop_signals()
    try:
        asyncio.run(serve())
    finally:
        if emulator_proc is not None:
            emulator_proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                emulator_proc.wait(5)


def exit_zero_on_stop_signals() -> None:
    """SIGTERM and SIGINT are how `foley up` is asked to stop (Ctrl-C, a stopped `make up`, a
    supervisor): a requested stop is a success, exit status 0, so `make` reports no `Error 143`.

    uvicorn handles both while it serves and, once it has shut down, raises the signal again;
    this handler then unwinds through the worker's graceful stop and the `finally` blocks that
    stop the emulator and the embedded Postgres (the default SIGTERM action would kill the
    process before them)."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def _bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound before anything starts (uvicorn serves on it)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    # As uvicorn binds: a port left in TIME_WAIT by a previous run is free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(
            f"port {port} on {host} is not available ({exc.strerror}); stop what uses it or "
            "choose another port: `make up FOLEY_PORT=8001` or `foley up --port 8001`"
        ) from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def record_emulator(data_dir: Path, platform_url: str) -> None:
    """Note where the emulator `foley up` started serves fal's platform API, beside the file the
    emulator keeps its admin key in (its data directory), for `foley usage reconcile`."""
    record = {"fal_platform_url": platform_url, "admin_key_file": "emulator/admin_key"}
    (data_dir / EMULATOR_RECORD).write_text(json.dumps(record))


def recorded_emulator(data_dir: Path) -> tuple[str, SecretStr] | None:
    """The platform URL and admin key of the emulator `foley up` last started with this data
    directory, or None."""
    try:
        record = json.loads((data_dir / EMULATOR_RECORD).read_text())
        key = (data_dir / record["admin_key_file"]).read_text().strip()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(record["fal_platform_url"]), SecretStr(key)


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
            raise CliError(f"the emulator exited at start; see {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/.well-known/jwks.json", timeout=1).status_code == 200:
                return proc
        time.sleep(0.2)
    proc.kill()
    raise CliError(f"the emulator did not start; see {log_path}")


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
