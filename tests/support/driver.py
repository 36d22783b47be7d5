"""A driver pool (app.db.driver) for tests that run in one rolled-back transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection


class TransactionPool:
    """Hands out the test connection's asyncpg connection, each use in a savepoint of the test's
    transaction (so what it writes is seen by the test and vanishes with it), one use at a
    time (one connection cannot run two statements at once)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._lock:
            raw = await self._connection.get_raw_connection()
            driver = raw.driver_connection
            if not driver.is_in_transaction():
                # SQLAlchemy begins lazily; outside a transaction a write here would be real.
                await self._connection.execute(text("SELECT 1"))
            assert driver.is_in_transaction()
            async with driver.transaction():
                yield driver
