"""Shared fixtures: real Postgres, the API over httpx, tenants and keys, sample clips."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker

from app.config import Settings
from app.db.driver import EngineDriver
from app.db.engine import create_engine
from app.jobs.hub import JobHub
from app.jobs.notifier import WorkerNotifier
from app.jobs.steps.context import policy_of
from app.jobs.store import JobStore
from app.main import create_app
from tests.support.clips import Clip, make_bouncing_square
from tests.support.database import create_database, drop_database, server_url
from tests.support.driver import TransactionPool

ADMIN_TOKEN = "test-admin-" + secrets.token_hex(8)
RUN_ID = f"{os.getpid()}"


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> None:
    # Estimates cache prices and learned ratios per process; every test starts from its own DB.
    from app.auth.dependencies import invalidate_principals
    from app.usage.estimates import PRICE_CACHE, RATIO_CACHE

    PRICE_CACHE.clear()
    RATIO_CACHE.clear()
    invalidate_principals()


@pytest.fixture(scope="session")
def pg_root() -> Path:
    # Not under pytest's tmp dirs: those are private to root (0700), and the embedded server runs
    # as an unprivileged user when the tests run as root. Concurrent test runs share the server
    # (pgserver counts its users) and each uses databases of its own (RUN_ID).
    root = Path(tempfile.gettempdir()) / f"foley-test-pg-{os.getuid()}"
    root.mkdir(mode=0o755, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def pg_server(pg_root: Path) -> str:
    return server_url(pg_root)


@pytest.fixture(scope="session")
async def database_url(pg_server: str) -> AsyncIterator[str]:
    name = f"foley_test_{RUN_ID}"
    yield await create_database(pg_server, name)
    await drop_database(pg_server, name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(database_url, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def notify_pool(engine: AsyncEngine) -> EngineDriver:
    return EngineDriver(engine)


@pytest.fixture
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection inside a transaction that is rolled back after the test."""
    async with engine.connect() as conn:
        trans = await conn.begin()
        try:
            yield conn
        finally:
            await trans.rollback()


@pytest.fixture
def driver_pool(connection: AsyncConnection) -> TransactionPool:
    """The driver pool (app.db.driver) of code under test: the test's connection."""
    return TransactionPool(connection)


@pytest.fixture
def sessionmaker(connection: AsyncConnection) -> async_sessionmaker:
    # Every session the code opens joins the test's transaction through a savepoint, so
    # commits inside the code under test are real commits to it and still vanish afterwards.
    return async_sessionmaker(
        bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        admin_token=SecretStr(ADMIN_TOKEN),
        database_url="postgresql://unused/unused",
        fal_key=SecretStr("test-fal-key"),
    )


@pytest.fixture
async def api(
    settings: Settings,
    engine: AsyncEngine,
    connection: AsyncConnection,
    sessionmaker: async_sessionmaker,
    notify_pool: EngineDriver,
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine)
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker
    app.state.driver_pool = TransactionPool(connection)
    app.state.job_store = JobStore(
        sessionmaker,
        app.state.driver_pool,
        policy=policy_of(settings),
        bill_422=settings.bill_upstream_422,
    )
    # Wake-ups run after the response, beside the test's next statements: not on its connection.
    app.state.notifier = WorkerNotifier(notify_pool)
    # Not listening: the test's events are never committed, so none would be announced.
    app.state.hub = JobHub(engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://foley.test") as client:
        client.app = app  # type: ignore[attr-defined]
        yield client


@dataclass
class TenantCreds:
    id: str
    name: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def make_tenant(api: httpx.AsyncClient, name: str) -> TenantCreds:
    r = await api.post("/v1/admin/tenants", json={"name": name}, headers=ADMIN)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    r = await api.post(f"/v1/admin/tenants/{tid}/keys", json={}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return TenantCreds(id=tid, name=name, key=r.json()["key"])


@pytest.fixture
async def tenant(api: httpx.AsyncClient) -> TenantCreds:
    return await make_tenant(api, "acme")


@pytest.fixture
async def other_tenant(api: httpx.AsyncClient) -> TenantCreds:
    return await make_tenant(api, "globex")


# Clips made once per session, for the media and storage tests.


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def mp4_with_audio(clip_dir: Path) -> Clip:
    return make_bouncing_square(clip_dir / "with-audio.mp4", with_audio=True)


@pytest.fixture(scope="session")
def mp4_without_audio(clip_dir: Path) -> Clip:
    return make_bouncing_square(clip_dir / "without-audio.mp4")


@pytest.fixture(scope="session")
def webm_with_audio(clip_dir: Path) -> Clip:
    return make_bouncing_square(clip_dir / "opus.webm", container="webm", with_audio=True)
