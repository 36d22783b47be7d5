"""Wake-ups after accepted jobs: at once when idle, coalesced when busy, none lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.driver import EngineDriver
from app.jobs.lifecycle import Wake
from app.jobs.notifier import WorkerNotifier
from tests.support.notify import listening


async def test_a_poke_reaches_a_listening_worker(
    engine: AsyncEngine, notify_pool: EngineDriver
) -> None:
    notifier = WorkerNotifier(notify_pool)
    async with listening(engine) as heard:
        notifier.poke()
        assert await asyncio.wait_for(heard.get(), 10) == Wake.QUEUED
    await notifier.aclose()
    assert notifier.sent == 1


async def test_a_burst_of_pokes_is_a_few_notifies(notify_pool: EngineDriver) -> None:
    notifier = WorkerNotifier(notify_pool, min_interval_s=1.0)
    for _ in range(100):
        notifier.poke()
        await asyncio.sleep(0)  # the notifier's turn between pokes: a burst, not a wait
    await notifier.aclose()
    # the first at once, then one more for all the pokes made while it was on its way
    assert notifier.sent == 2


class BlockingPool:
    """Holds every NOTIFY until released, to poke while one is on its way."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[BlockingPool]:
        yield self

    async def execute(self, sql: str, *args: object) -> None:
        self.statements.append(sql)
        self.started.set()
        await self.release.wait()


async def test_a_poke_during_a_send_gets_a_notify_of_its_own() -> None:
    pool = BlockingPool()
    notifier = WorkerNotifier(pool, min_interval_s=0.0)  # type: ignore[arg-type]
    notifier.poke()
    await pool.started.wait()
    # This job committed after the NOTIFY on its way was sent: that one may not cover it.
    notifier.poke()
    pool.release.set()
    await notifier.aclose()
    assert len(pool.statements) == 2
