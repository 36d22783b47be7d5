"""Connections for the hot paths: an asyncpg pool beside SQLAlchemy's, on the same database.

Accepting a job is the gateway's hottest path, and when nothing but the job's own row is written
(no budget to reserve, no idempotency key to record) it is a single autocommitted INSERT.
Through SQLAlchemy's async engine that statement costs a pool checkout, greenlet hand-offs and a
BEGIN/COMMIT pair around it: measured, more CPU than the insert itself. This pool runs it as one
round trip. The worker has one too, for what lies on every job's way to its submit: the claims,
lease renewals and the 'sending' mark. Everything else, including the accept paths that need a
transaction, stays on SQLAlchemy.

Anything with ``acquire()`` yielding an asyncpg connection will do (the tests pass one that runs
inside their rolled-back transaction).
"""

from __future__ import annotations

import json
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

# Options of SQLAlchemy's asyncpg dialect that asyncpg.connect() does not know.
_DIALECT_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


class DriverPool(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


def connect_kwargs(engine: AsyncEngine) -> dict[str, Any]:
    """asyncpg's connect arguments for the engine's URL, read the way the engine reads them."""
    _, kwargs = engine.dialect.create_connect_args(engine.url)
    cache_size = kwargs.pop("prepared_statement_cache_size", None)
    for name in _DIALECT_ONLY:
        kwargs.pop(name, None)
    if cache_size is not None:
        kwargs["statement_cache_size"] = int(cache_size)
    # The engine's session settings (app.db.engine.create_engine), but its 60 s cap on a
    # statement enforced by the server: asyncpg's command_timeout arms and cancels a timer in the
    # event loop around every query, which on this path is a measurable share of the work.
    kwargs.setdefault("server_settings", {"application_name": "foley", "statement_timeout": "60s"})
    return kwargs


async def create_driver_pool(engine: AsyncEngine, *, max_size: int) -> asyncpg.Pool:
    # min_size=1: the pool grows with load and gives idle connections back after 5 minutes.
    return await asyncpg.create_pool(
        **connect_kwargs(engine),
        min_size=1,
        max_size=max_size,
        max_inactive_connection_lifetime=300.0,
        reset=_nothing_to_reset,
        init=json_codecs,
    )


async def json_codecs(conn: asyncpg.Connection) -> None:
    """JSON and JSONB as SQLAlchemy's asyncpg dialect sets them up: parameters are JSON text,
    values come back decoded. The same SQL then behaves the same on both kinds of connection
    (the tests run this pool's statements on SQLAlchemy's)."""
    await conn.set_type_codec(
        "json",
        schema="pg_catalog",
        format="binary",
        encoder=str.encode,
        decoder=lambda data: json.loads(data.decode()),
    )
    # Binary JSONB is the text with a one-byte version prefix.
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        format="binary",
        encoder=lambda text: b"\x01" + text.encode(),
        decoder=lambda data: json.loads(data[1:].decode()),
    )


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset query (UNLISTEN, RESET ALL, …: a round trip per
    use). What runs on this pool leaves no session state behind: no LISTEN, and SET or advisory
    locks only for the transaction (``set_config(..., true)``, ``pg_advisory_xact_lock``).
    asyncpg itself still rolls back a transaction left open."""
