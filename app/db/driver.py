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
from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
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
        # cost ~40 µs a use).
        fairy = await self._checkout()
        driver = fairy.driver_connection
        cut_short = False
        try:
            yield driver
        except BaseException as exc:
            if driver.is_closed() or isinstance(exc, _CONNECTION_LOST):
                await greenlet_spawn(fairy.invalidate)
            # Cancelled (or timed out) in a statement: asyncpg cancels it at the server in the
            # background, and the transaction status it reports is the one before that
            # statement until the server answers, so a BEGIN cut short reads "not in a
            # transaction" now and "in one" later. A server's error arrives with its status.
            cut_short = not isinstance(exc, asyncpg.PostgresError)
            raise
        finally:
            try:
                # The pool's reset on return rolls back only the transactions SQLAlchemy began.
                # After a statement cut short, ROLLBACK whatever the status says: asyncpg sends
                # it only once the cut statement has ended, and outside a transaction it is a
                # no-op (an exception's path only; the usual one costs nothing).
                if not driver.is_closed() and (cut_short or driver.is_in_transaction()):
                    try:
                        await driver.execute("ROLLBACK")
                    except Exception:
                        await greenlet_spawn(fairy.invalidate)
            except BaseException:
                # Interrupted (cancelled) while it was being cleaned up: it goes back marked
                # to be replaced at its next checkout, never handed out as it is.
                fairy.invalidate(soft=True)
                raise
            finally:
                # Given back without a greenlet: SQLAlchemy began no transaction on it, so the
                # pool's reset has nothing to roll back and returning it does no I/O. Always:
                # a connection left checked out is lost to the pool until the collector finds
                # it.
                fairy.close()

    async def _checkout(self) -> PoolProxiedConnection:
        """A connection of the pool. The pool's code is synchronous and reaches the driver's
        coroutines through a greenlet; entering one cost ~35 µs deep in a request, a tenth of
        accepting a job (bench/README.md), and is needed only when the checkout does I/O. A
        connection waiting in the pool is taken without one. A checkout that needs I/O stops
        before it (an empty pool to wait on at its first await; a connection to open, new or in
        place of one past its age, at app.db.engine's connect guard), the pool puts back what
        it took, and the checkout is made again in a greenlet."""
        sync = self.engine.sync_engine
        if isinstance(sync.pool, QueuePool) and sync.pool.checkedin():
            try:
                fairy = sync.raw_connection()
            except MissingGreenlet:
                pass
            else:
                if not fairy.driver_connection.is_closed():
                    return fairy
                # The server closed it while it was pooled (app.db.engine leaves this case to
                # us outside a greenlet: discarding it closes the driver's side, which awaits).
                try:
                    await greenlet_spawn(fairy.invalidate)
                finally:
                    fairy.close()
        # A connection the server closed while pooled is replaced here, by app.db.engine's
        # checkout check, as for sessions.
        return await self.engine.raw_connection()


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
