"""Listening on the workers' channel, as a worker would, to see what the gateway NOTIFYs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.driver import EngineDriver
from app.jobs.store import NOTIFY_CHANNEL


@asynccontextmanager
async def listening(engine: AsyncEngine) -> AsyncIterator[asyncio.Queue[str]]:
    """The payloads NOTIFYed on ``foley_jobs`` while inside, in order."""
    heard: asyncio.Queue[str] = asyncio.Queue()
    async with EngineDriver(engine).acquire() as conn:
        await conn.add_listener(NOTIFY_CHANNEL, lambda *args: heard.put_nowait(args[-1]))
        try:
            yield heard
        finally:
            await conn.remove_listener(NOTIFY_CHANNEL, lambda *args: None)
            await conn.execute("UNLISTEN *")
