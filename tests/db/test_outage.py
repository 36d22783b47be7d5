"""With the database unreachable, every endpoint answers 503 problem+json with Retry-After."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.db.driver import EngineDriver
from app.db.engine import create_engine, create_sessionmaker
from app.db.outage import database_unavailable, install_outage_handler
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


def _refused_connection() -> Exception:
    """What a raw checkout raises while the server shuts down or starts up: SQLAlchemy's
    translation of asyncpg's CannotConnectNowError (the dialect's DBAPI error, not a
    SQLAlchemyError), made by the dialect's own translation."""
    from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection, dialect

    refused = asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
    try:
        AsyncAdapt_asyncpg_connection._handle_exception_no_connection(
            dialect.import_dbapi(), refused
        )
    except Exception as exc:
        return exc
    raise AssertionError("the dialect did not translate the error")


async def test_a_server_refusing_connections_while_it_stops_is_a_503() -> None:
    # Seen by the chaos suite (bench/chaos_bench.py, outage): creates arriving while Postgres
    # shut down were answered 500.
    app = FastAPI()
    install_outage_handler(app)

    @app.get("/checkout")
    async def checkout() -> None:
        raise _refused_connection()

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://foley.test") as client:
        r = await client.get("/checkout")
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) > 0
    assert r.json()["code"] == "database_unavailable"
