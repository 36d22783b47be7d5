"""With the database unreachable, every endpoint answers 503 problem+json with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.config import Settings
from app.db.driver import EngineDriver
from app.db.engine import create_engine, create_sessionmaker
from app.db.outage import database_unavailable
from app.jobs.notifier import WorkerNotifier
from app.jobs.steps.context import policy_of
from app.jobs.store import JobStore
from app.main import create_app
from tests.conftest import ADMIN
from tests.support.emulator import free_port


@pytest.fixture
async def down_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API wired to a database address where nothing listens (what a stopped Postgres
    looks like to it)."""
    engine = create_engine(f"postgresql+asyncpg://foley:x@127.0.0.1:{free_port()}/foley")
    app = create_app(settings, engine=engine)
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.driver_pool = EngineDriver(engine)
    app.state.job_store = JobStore(
        app.state.sessionmaker, app.state.driver_pool, policy=policy_of(settings), bill_422=False
    )
    app.state.notifier = WorkerNotifier(app.state.driver_pool)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://foley.test") as client:
        yield client
    await engine.dispose()


KEY = {"Authorization": "Bearer fk_live_notarealkeybutwellformed0000000000000"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "body"),
    [
        (
            "POST",
            "/v1/jobs",
            KEY,
            {"model": "thinksound", "input": {"video_url": "https://x/a.mp4"}},
        ),
        ("GET", "/v1/jobs", KEY, None),
        ("GET", "/v1/usage", KEY, None),
        ("GET", "/v1/admin/tenants", ADMIN, None),
        ("POST", "/v1/admin/tenants", ADMIN, {"name": "t"}),
    ],
)
async def test_every_endpoint_is_a_503_with_retry_after(
    down_api: httpx.AsyncClient, method: str, path: str, headers: dict, body: dict | None
) -> None:
    r = await down_api.request(method, path, headers=headers, json=body)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert int(r.headers["retry-after"]) > 0
    problem = r.json()
    assert problem["code"] == "database_unavailable" and problem["request_id"]


def test_a_bug_is_not_mistaken_for_an_outage() -> None:
    assert not database_unavailable(ValueError("bad"))
    assert not database_unavailable(KeyError("x"))
    assert database_unavailable(ConnectionRefusedError(111, "refused"))
