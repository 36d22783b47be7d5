"""Raw asyncpg connections for the hot statements, drawn from the engine's own pool.

A process has one connection pool: SQLAlchemy's. Most work goes through sessions; a few single
statements on every job's way (accepting a job, claims, lease renewals, the 'sending' mark) run
on the pooled connection's asyncpg driver directly, because the session around them cost more
CPU than the statement itself (bench/README.md). They run outside any SQLAlchemy transaction,
each committed by itself (or in an explicit ``conn.transaction()``), and JSON behaves the same on
both sides: the connection is set up by SQLAlchemy's asyncpg dialect (JSON parameters as text,
values decoded).

Anything with ``acquire()`` yielding an asyncpg connection will do (the tests pass one that runs
inside their rolled-back transaction).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.util import greenlet_spawn

# A connection that fails with these is gone: the engine must not hand it out again (a
# Postgres restart would otherwise fail one step per pooled connection).
_CONNECTION_LOST = (
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
)


class DriverPool(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[asyncpg.Connection]: ...


class EngineDriver:
    """``acquire()`` an asyncpg connection checked out of ``engine``'s pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        # The pool's own connection record, without SQLAlchemy's Connection around it (that
        # cost ~40 µs a use, a tenth of accepting a job).
        # A connection the server closed while pooled is replaced at checkout
        # (app.db.engine's checkout check), here as for sessions.
        fairy = await self.engine.raw_connection()
        driver = fairy.driver_connection
        try:
            yield driver
        except BaseException as exc:
            if driver.is_closed() or isinstance(exc, _CONNECTION_LOST):
                await greenlet_spawn(fairy.invalidate)
            raise
        finally:
            # The pool's reset on return rolls back only the transactions SQLAlchemy began.
            if not driver.is_closed() and driver.is_in_transaction():
                try:
                    await driver.execute("ROLLBACK")
                except Exception:
                    await greenlet_spawn(fairy.invalidate)
            await greenlet_spawn(fairy.close)


async def driver_of(executor: AsyncSession | asyncpg.Connection) -> asyncpg.Connection:
    """The asyncpg connection a write runs on: the connection itself, or the one under a
    session's transaction. Statements on a session's driver bypass its unit of work: what the
    session holds unflushed is written later, and what it loaded is not refreshed."""
    if isinstance(executor, asyncpg.Connection):
        return executor
    raw = await (await executor.connection()).get_raw_connection()
    return raw.driver_connection


class NeedsSession(Exception):
    """A write the raw connection does not make (a rare case, written only through a session):
    raised inside the raw transaction, which then rolls back whole, and the caller writes the
    same change through a session."""
