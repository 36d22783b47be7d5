"""The API as its process starts it: ``create_app(settings)`` with its real lifespan, building its
own engine from the settings. It commits (a tenant, its audit record, a job), so it runs against
a migrated database of its own, not the one the rolled-back tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from app.config import Settings
from app.db.driver import EngineDriver
from app.jobs.notifier import WorkerNotifier
from app.jobs.store import JobStore
from app.main import create_app
from app.upstream.webhooks import FalWebhookVerifier
from tests.conftest import ADMIN_TOKEN, RUN_ID, make_tenant
from tests.support.database import asyncpg_dsn, create_database, drop_database
from tests.support.waiting import eventually

JOB = {"model": "thinksound", "input": {"video_url": "https://media.example/clip.mp4"}}


@pytest.fixture(scope="module")
async def own_database_url(pg_server: str) -> AsyncIterator[str]:
    name = f"foley_main_{RUN_ID}"
    yield await create_database(pg_server, name)
    await drop_database(pg_server, name)


async def connections_to(server: str, database: str) -> int:
    """Sessions the Postgres server holds open on ``database``, whoever opened them."""
    conn = await asyncpg.connect(**asyncpg_dsn(server))
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
        )
        return count
    finally:
        await conn.close()


async def test_the_lifespan_wires_the_app_serves_and_lets_go(
    own_database_url: str, pg_server: str, tmp_path: Path
) -> None:
    settings = Settings(
        env="test",
        data_dir=tmp_path / "data",
        admin_token=SecretStr(ADMIN_TOKEN),
        database_url=own_database_url,
        fal_key=SecretStr("test-fal-key"),
    )
    database = make_url(own_database_url).database
    assert database is not None
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state = app.state
        engine = state.engine
        assert isinstance(engine, AsyncEngine) and engine.url.database == database
        assert state.sessionmaker.kw["bind"] is engine
        assert isinstance(state.driver_pool, EngineDriver) and state.driver_pool.engine is engine
        assert isinstance(state.job_store, JobStore)
        assert state.job_store.sessionmaker is state.sessionmaker
        assert state.job_store.driver is state.driver_pool
        assert isinstance(state.notifier, WorkerNotifier)
        assert isinstance(state.webhook_verifier, FalWebhookVerifier)

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://foley.test") as client:
            ready = await client.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"database": "ok", "migrations": "ok"}
            tenant = await make_tenant(client, "lifespan")
            accepted = await client.post("/v1/jobs", json=JOB, headers=tenant.headers)
            assert accepted.status_code == 202, accepted.text
            job_url = f"/v1/jobs/{accepted.json()['id']}"
            stored = await client.get(job_url, headers=tenant.headers)
            assert (stored.status_code, stored.json()["status"]) == (200, "queued")
        pool = engine.pool
        assert isinstance(pool, QueuePool) and pool.checkedin() > 0  # what there is to let go of
        assert await connections_to(pg_server, database) > 0

    # Left: the accept's wake-up was sent (at the latest on the way out), the pool emptied and
    # replaced, and the server holds no session of the app's any more.
    assert state.notifier.sent == 1
    assert pool.checkedin() == pool.checkedout() == 0
    assert engine.pool is not pool  # disposed: a later use would start a new pool

    async def none_left() -> bool:
        return await connections_to(pg_server, database) == 0

    await eventually(none_left, what=f"the server to close every session on {database}")
