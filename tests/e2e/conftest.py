"""End to end: the gateway's API served by uvicorn on a real port, its worker running, the fal
emulator as a subprocess, real Postgres (a database of its own: these tests need committed data
visible across connections, so they truncate between tests instead of rolling back).

    async with gateway(public=True, poll_interval_min=0.2) as gw:
        job = await gw.create({"model": "thinksound", "input": {...}})
        done = await gw.wait(job["id"])
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.db.engine import create_engine
from app.entrypoints.http import with_deadlines
from app.jobs.steps.context import platform_key
from app.main import create_app
from app.storage import storage_from_settings
from app.upstream.fal import FalClient, FalTimeouts, build_http_client
from app.upstream.platform import PlatformClient
from app.worker.runner import Worker
from tests.conftest import RUN_ID
from tests.support.clips import Clip, make_bouncing_square
from tests.support.database import create_database, drop_database
from tests.support.emulator import EmulatorProcess, free_port, start_emulator
from tests.support.waiting import eventually

ADMIN = "e2e-admin-token"
TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


@pytest.fixture(scope="session")
async def e2e_database_url(pg_server: str) -> AsyncIterator[str]:
    name = f"foley_e2e_{RUN_ID}"
    yield await create_database(pg_server, name)
    await drop_database(pg_server, name)


@pytest.fixture(scope="session")
async def e2e_engine(e2e_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(e2e_database_url, pool_size=30)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    emu = start_emulator(tmp_path_factory.mktemp("e2e-emulator"), concurrency=4, seed=0)
    yield emu
    emu.stop()


@pytest.fixture
def emu(emulator_process: EmulatorProcess) -> EmulatorProcess:
    emulator_process.reset()
    return emulator_process


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Clip]:
    root = tmp_path_factory.mktemp("e2e-clips")
    return {
        "bounce": make_bouncing_square(root / "bounce.mp4", duration_s=4.0, width=160, height=120),
        "short": make_bouncing_square(root / "short.mp4", duration_s=2.0, width=160, height=120),
    }


@dataclass
class Gateway:
    base_url: str
    settings: Settings
    engine: AsyncEngine
    emu: EmulatorProcess
    client: httpx.AsyncClient
    workers: list[Worker] = field(default_factory=list)
    app: FastAPI | None = None
    tenant_key: str = ""
    tenant_id: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tenant_key}"}

    async def new_tenant(self, name: str) -> tuple[str, str]:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        r = await self.client.post("/v1/admin/tenants", json={"name": name}, headers=admin)
        tid = r.json()["id"]
        r = await self.client.post(f"/v1/admin/tenants/{tid}/keys", json={}, headers=admin)
        return tid, r.json()["key"]

    async def create(self, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        r = await self.client.post("/v1/jobs", json=body, headers={**self.headers, **headers})
        assert r.status_code == 202, r.text
        return r.json()

    async def get(self, job_id: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/jobs/{job_id}", headers=self.headers)
        assert r.status_code == 200, r.text
        return r.json()

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's events, as the JSON list gives them."""
        r = await self.client.get(f"/v1/jobs/{job_id}/events", headers=self.headers)
        assert r.status_code == 200, r.text
        return list(r.json()["data"])

    async def wait(
        self,
        job_id: str,
        *,
        until: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """Poll the job until ``until(job)`` (default: a terminal status)."""
        until = until or (lambda j: j["status"] in TERMINAL)
        deadline = time.monotonic() + timeout
        while True:
            job = await self.get(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s: {job}")
            await asyncio.sleep(0.1)  # between polls, up to the deadline

    async def sql(self, statement: str, **params: Any) -> list[Any]:
        async with self.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []

    def video_url(self, clip: Clip) -> str:
        """The clip, uploaded to the emulator's storage (as a client would host it)."""
        return self.emu.upload(clip.path, "video/mp4")

    def make_worker(self, settings: Settings | None = None, *, owner: str | None = None) -> Worker:
        settings = settings or self.settings
        http = build_http_client(FalTimeouts(read=5.0))
        fal = FalClient(
            settings.fal_key.get_secret_value(),
            queue_url=settings.fal_queue_url,
            rest_url=settings.fal_rest_url,
            cdn_url=settings.fal_cdn_url,
            http=http,
        )
        key = platform_key(settings)
        platform = PlatformClient(http, settings.fal_platform_url, key) if key else None
        return Worker(
            settings,
            self.engine,
            fal,
            storage_from_settings(settings),
            owner=owner,
            platform=platform,
        )


async def _truncate(engine: AsyncEngine) -> None:
    # A previous test's server may have been stopped mid-request: end any session it left
    # behind (holding locks) before wiping the tables.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND state IN ('idle in transaction', 'idle in transaction (aborted)', 'active')"
            )
        )
    await engine.dispose()  # our own pooled connections may be among those just ended
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE tenants, api_keys, jobs, files, fal_webhook_events, idempotency_keys, "
                "notification_outbox CASCADE"
            )
        )


@pytest.fixture
def gateway(
    e2e_engine: AsyncEngine, e2e_database_url: str, emu: EmulatorProcess, tmp_path: Path
) -> Callable[..., contextlib.AbstractAsyncContextManager[Gateway]]:
    @contextlib.asynccontextmanager
    async def start(
        *, public: bool = True, workers: int = 1, own_pool: bool = False, **overrides: Any
    ) -> AsyncIterator[Gateway]:
        """``own_pool``: the API builds its own engine (pool of FOLEY_DB_POOL_SIZE) instead of
        sharing the tests' engine."""
        await _truncate(e2e_engine)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        values: dict[str, Any] = {
            "env": "test",
            "data_dir": tmp_path / "gateway",
            "database_url": e2e_database_url,
            "admin_token": SecretStr(ADMIN),
            "fal_key": SecretStr(emu.fal_key),
            "fal_queue_url": emu.base_url,
            "fal_rest_url": emu.base_url,
            "fal_cdn_url": emu.base_url,
            "fal_platform_url": f"{emu.base_url}/v1",
            "fal_admin_key": SecretStr(emu.admin_key),
            "public_url": base if public else None,
            "poll_interval_min": timedelta(seconds=0.2),
            "poll_interval_max": timedelta(seconds=1),
            "webhook_grace": timedelta(seconds=10),
            "worker_poll_interval": timedelta(seconds=0.5),
            "lease_duration": timedelta(seconds=10),
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings, engine=None if own_pool else e2e_engine)
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="on",
                http=with_deadlines(  # the protocol `foley api` serves with
                    head_s=settings.http_head_timeout.total_seconds(),
                    body_s=settings.http_body_timeout.total_seconds(),
                ),
            )
        )
        serve = asyncio.create_task(server.serve())
        await eventually(
            lambda: server.started or serve.done(), timeout=30, interval=0.01, what="the API"
        )
        if not server.started:
            await serve  # it stopped before serving: raise what stopped it
            raise AssertionError("the API server exited before serving")
        client = httpx.AsyncClient(base_url=base, timeout=30)
        gw = Gateway(
            base_url=base, settings=settings, engine=e2e_engine, emu=emu, client=client, app=app
        )
        gw.tenant_id, gw.tenant_key = await gw.new_tenant("e2e")
        tasks = []
        for i in range(workers):
            w = gw.make_worker(owner=f"test-worker-{i}")
            gw.workers.append(w)
            tasks.append(asyncio.create_task(w.run(shutdown_grace_s=5)))
        try:
            yield gw
        finally:
            for w in gw.workers:
                w.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()
            server.should_exit = True
            await serve

    return start
