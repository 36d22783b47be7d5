"""Waking workers after jobs are accepted, without serializing the API's commits.

A transaction that NOTIFYs takes a global lock at commit, so a NOTIFY inside every accept would
let only one job commit at a time (measured: throughput capped near one fsync per job). Instead
the API process sends NOTIFYs of its own after its commits, at most one per ``min_interval_s``:
an idle gateway wakes a worker at once, a busy one sends one wake-up for however many jobs it
accepted meanwhile. Every poke is followed by a NOTIFY sent after it, so no accepted job waits
for the workers' polling; a NOTIFY is only a hint all the same (a lost one is caught by polling).
"""

from __future__ import annotations

import asyncio
import math

import structlog

from app.db.driver import DriverPool
from app.jobs.lifecycle import Wake
from app.jobs.store import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)


class WorkerNotifier:
    def __init__(self, pool: DriverPool, *, min_interval_s: float = 0.005) -> None:
        self._pool = pool
        self._min_interval_s = min_interval_s
        self._wanted = False
        self._last_sent = -math.inf
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def poke(self) -> None:
        """Called after a commit that made work due; returns at once (the NOTIFY follows)."""
        self._wanted = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wanted:
            wait = self._last_sent + self._min_interval_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            # Pokes from here on were made after commits this NOTIFY may not cover: they ask
            # for another round.
            self._wanted = False
            self._last_sent = loop.time()
            await self._send()

    async def _send(self) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, Wake.QUEUED.value)
            self.sent += 1
        except Exception:  # a hint only: the workers poll anyway
            log.warning("could not notify workers", exc_info=True)

    async def aclose(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
