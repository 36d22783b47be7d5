"""Raw driver connections come out of the engine's own pool, set up as the engine sets them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.driver import EngineDriver
from app.db.engine import create_engine, create_sessionmaker
from tests.support.waiting import eventually


@asynccontextmanager
async def _own(url: str, **kwargs: Any) -> AsyncIterator[tuple[AsyncEngine, EngineDriver]]:
    """An engine of the test's own (its pool's size and ages chosen) and its driver pool."""
    own = create_engine(url, **kwargs)
    try:
        yield own, EngineDriver(own)
    finally:
        await own.dispose()


async def test_a_driver_connection_is_the_engines(engine: AsyncEngine) -> None:
    driver = EngineDriver(engine)
    async with driver.acquire() as conn:
        name = await conn.fetchval("SELECT current_database()")
        app = await conn.fetchval("SELECT current_setting('application_name')")
        timeout = await conn.fetchval("SELECT current_setting('statement_timeout')")
        # JSON comes back decoded, as through a session
        assert await conn.fetchval("SELECT '{\"a\": 1}'::jsonb") == {"a": 1}
    assert name == engine.url.database
    assert app == "foley" and timeout == "1min"


async def test_a_transaction_left_open_is_rolled_back_on_release(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1)
    driver = EngineDriver(engine)
    try:
        async with driver.acquire() as conn:
            await conn.execute("BEGIN")
            await conn.execute("SET LOCAL application_name = 'changed'")
        async with driver.acquire() as conn:  # the same connection (pool of one)
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT current_setting('application_name')") == "foley"
    finally:
        await engine.dispose()


async def test_a_transaction_begun_by_a_statement_cancelled_midway_is_rolled_back_on_release(
    database_url: str, engine: AsyncEngine
) -> None:
    # The statement opens a transaction and is cancelled while the server runs it: until the
    # server answers the cancel, the connection's status is the one from before (no
    # transaction), then an aborted transaction. The release must not trust the status it
    # reads at once: the next user gets no transaction, aborted or not.
    async with _own(database_url, pool_size=1) as (own, driver):

        async def use() -> None:
            async with driver.acquire() as conn:
                await conn.execute("BEGIN; SELECT pg_sleep(30)")

        task = asyncio.create_task(use())

        async def sleeping() -> bool:
            async with engine.connect() as other:
                found = await other.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE query LIKE 'BEGIN; SELECT pg_sleep%' AND state = 'active'"
                    )
                )
            return bool(found)

        await eventually(sleeping, what="the statement running at the server")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        await eventually(lambda: own.sync_engine.pool.checkedout() == 0, what="checked in")
        async with driver.acquire() as conn:  # the same connection (pool of one), or its heir
            await conn.execute("SELECT 1")  # the status below is the server's answer to it
            assert not conn.is_in_transaction()


async def test_a_lost_connection_is_not_handed_out_again(
    database_url: str, engine: AsyncEngine
) -> None:
    async with _own(database_url, pool_size=1) as (_, driver):
        async with driver.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
        async with engine.connect() as other:
            await other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        # The server's goodbye may or may not have reached the client yet: either the dead
        # connection is noticed at checkout and replaced, or its one statement fails and it is
        # discarded. Never more than that one failure, and never the dead connection again.
        failures = 0
        for _ in range(2):
            try:
                async with driver.acquire() as conn:
                    assert await conn.fetchval("SELECT pg_backend_pid()") != pid
            except Exception:  # asyncpg's, or the socket's, error
                failures += 1
        assert failures <= 1
        async with driver.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") != pid


async def test_a_session_never_gets_a_connection_the_server_closed(
    database_url: str, engine: AsyncEngine
) -> None:
    # After a Postgres restart every pooled connection is dead; the first statement of each
    # session or raw use must still work (the checkout replaces what the server closed).
    async with _own(database_url, pool_size=3) as (own, driver):
        drivers = []
        async with own.connect() as a, own.connect() as b, own.connect() as c:
            for conn in (a, b, c):
                drivers.append((await conn.get_raw_connection()).driver_connection)
                await conn.exec_driver_sql("SELECT 1")
        pids = [d.get_server_pid() for d in drivers]
        async with engine.connect() as other:
            for pid in pids:
                await other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")

        async def all_closed() -> bool:
            return all(d.is_closed() for d in drivers)

        # The goodbyes reach the clients' sockets: each pooled connection knows it is closed.
        await eventually(all_closed, what="the closes to reach the pooled connections")
        async with create_sessionmaker(own)() as session:
            assert (await session.execute(text("SELECT pg_backend_pid()"))).scalar() not in pids
        async with driver.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") not in pids


async def test_with_every_connection_out_an_acquire_waits_for_one_to_come_back(
    database_url: str,
) -> None:
    async with _own(database_url, pool_size=1, pool_timeout=30) as (own, driver):
        holding = asyncio.Event()
        release = asyncio.Event()
        order: list[str] = []

        async def first() -> int:
            async with driver.acquire() as conn:
                holding.set()
                await release.wait()
                order.append("first released")
                return int(await conn.fetchval("SELECT pg_backend_pid()"))

        async def second() -> int:
            await holding.wait()
            async with driver.acquire() as conn:
                order.append("second acquired")
                return int(await conn.fetchval("SELECT pg_backend_pid()"))

        a = asyncio.create_task(first())
        b = asyncio.create_task(second())
        await holding.wait()
        await eventually(lambda: own.sync_engine.pool.checkedout() == 1, what="the checkout")
        assert not b.done()
        release.set()
        pids = await asyncio.gather(a, b)
        assert order == ["first released", "second acquired"]
        assert pids[0] == pids[1]  # the pool's one connection, handed on


async def test_a_connection_past_its_recycle_age_is_replaced_at_checkout(
    database_url: str,
) -> None:
    # pool_recycle=0: every pooled connection is past its age at its next checkout, which must
    # open a new one (I/O) and still hand out a working connection each time.
    async with _own(database_url, pool_size=1, pool_recycle=0) as (own, driver):
        pids = []
        for _ in range(3):
            async with driver.acquire() as conn:
                pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
        assert len(set(pids)) == 3
        assert own.sync_engine.pool.checkedout() == 0
        assert own.sync_engine.pool.checkedin() == 1


async def test_many_acquires_at_once_share_the_pool_and_give_every_connection_back(
    database_url: str,
) -> None:
    async with _own(database_url, pool_size=3) as (own, driver):

        async def use(i: int) -> int:
            async with driver.acquire() as conn:
                return int(await conn.fetchval("SELECT $1::int", i))

        assert await asyncio.gather(*(use(i) for i in range(200))) == list(range(200))
        pool = own.sync_engine.pool
        assert (pool.checkedout(), pool.checkedin()) == (0, 3)


async def test_acquires_cancelled_at_any_moment_give_every_connection_back(
    database_url: str,
) -> None:
    # Tasks cancelled in their statement, in the transaction's cleanup or while waiting for a
    # connection, twice over: the pool ends with every connection checked in, each usable.
    async with _own(database_url, pool_size=3, pool_timeout=30) as (own, driver):

        async def use() -> None:
            async with driver.acquire() as conn:
                await conn.execute("BEGIN")
                await conn.execute("SELECT pg_sleep(0.02)")

        tasks = [asyncio.create_task(use()) for _ in range(30)]
        for i, task in enumerate(tasks):
            await asyncio.sleep(0.002 * (i % 7))
            task.cancel()
            await asyncio.sleep(0.001 * (i % 3))
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pool = own.sync_engine.pool
        await eventually(lambda: pool.checkedout() == 0, what="every connection checked in")
        for _ in range(3 * 2):
            async with driver.acquire() as conn:
                assert not conn.is_in_transaction()
                assert await conn.fetchval("SELECT 1") == 1
