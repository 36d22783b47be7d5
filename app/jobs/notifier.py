"""Waking workers after jobs are accepted, without serializing the API's commits.

A transaction that NOTIFYs takes a global lock at commit, so a NOTIFY inside every accept would
let only one job commit at a time (measured: throughput capped near one fsync per job). Instead
the API process sends one NOTIFY after its commits, coalesced: however many jobs were accepted
in the last few milliseconds, the workers get one wake-up. It is only a hint: a lost one is
caught by the workers' polling.
"""

from __future__ import annotations

import asyncio

import structlog

from app.db.driver import DriverPool
from app.jobs.repository import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)


class WorkerNotifier:
    def __init__(self, pool: DriverPool, *, coalesce_s: float = 0.002) -> None:
        self._pool = pool
        self._coalesce_s = coalesce_s
        self._pending: asyncio.Task[None] | None = None

    def poke(self) -> None:
        """Called after a commit that made work due; returns at once (the NOTIFY follows)."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        await asyncio.sleep(self._coalesce_s)
        try:
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, 'job')", NOTIFY_CHANNEL)
        except Exception:  # a hint only: the workers poll anyway
            log.warning("could not notify workers", exc_info=True)

    async def aclose(self) -> None:
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
