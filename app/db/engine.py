"""Engine and session factory, built once per process from the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, MissingGreenlet
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import in_greenlet

from app.config import Settings
from app.db.embedded import start_embedded_postgres


def normalize_database_url(url: str) -> str:
    """Accept the URL forms people paste (``postgres://``, ``postgresql://``) and use asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: Postgres only")
    return parsed.render_as_string(hide_password=False)


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return normalize_database_url(settings.database_url)
    return start_embedded_postgres(settings.data_dir)


def create_engine(url: str, *, pool_size: int = 10, **kwargs: Any) -> AsyncEngine:
    """The process's one connection pool: at most ``pool_size`` connections, each kept once
    opened. No overflow: an overflow connection is closed when it is given back, so a burst
    would open and close a connection per request (a Postgres backend's start-up cost more than
    the insert it was opened for); a request waits for a pooled connection instead."""
    kwargs.setdefault("max_overflow", 0)
    # Recycling bounds how stale a pooled connection can get.
    kwargs.setdefault("pool_recycle", 1800)
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        # No pre-ping: it costs three round trips per checkout (most of a short request). A
        # connection the server dropped fails its statement once and is discarded.
        pool_pre_ping=False,
        # Statements stay short; a stuck query should not hold a worker forever. Enforced by the
        # server: asyncpg's command_timeout arms and cancels a timer around every query, a
        # measurable share of the hot single statements (app.db.driver).
        connect_args={"server_settings": {"application_name": "foley", "statement_timeout": "60s"}},
        **kwargs,
    )
    event.listen(engine.sync_engine.pool, "checkout", _closed_is_gone)
    event.listen(engine.sync_engine, "do_connect", _connect_in_a_greenlet)
    return engine


def _connect_in_a_greenlet(*_: Any) -> None:
    """Connecting awaits: outside a greenlet (app.db.driver's checkout of a pooled connection,
    which found the connection it took needs replacing) it stops here, before the driver's
    connect is even created, and the driver pool checks out again in a greenlet."""
    if not in_greenlet():
        raise MissingGreenlet("connecting needs a greenlet")


def _closed_is_gone(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection the server closed (a Postgres restart, an idle timeout) is replaced
    at checkout — its driver noticed the close, so this costs no round trip — instead of
    failing the first statement of whatever took it. Outside a greenlet (app.db.driver's
    checkout of a pooled connection) discarding it could not close the driver's side, which
    awaits: the driver pool checks for itself and discards it in a greenlet."""
    if dbapi_connection.driver_connection.is_closed() and in_greenlet():
        raise DisconnectionError("the server closed this pooled connection")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


@asynccontextmanager
async def unit_of_work(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One transaction: commit on success, roll back on error (the worker's task wrapper)."""
    async with sessionmaker() as session, session.begin():
        yield session
