"""A LISTEN connection held for the life of a process, and got back when it is lost.

Both the worker (``foley_jobs``: work to claim) and the API's hub (``foley_events``: a job's
news) hold one. A NOTIFY is a signal, never the data: whoever listens reads the database when
woken, and reads again once the connection is back, because what was announced while nobody
listened was never heard.

A lost connection is noticed at once (the driver's termination callback: a Postgres restart
closes it) or, for one that died silently (a dropped network path), by the next ping;
reconnecting is tried every half second. The connection is one of the engine's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

PING_S = 15.0
RETRY_S = 0.5

# (connection, backend pid, channel, payload), as asyncpg calls it
OnNotify = Callable[[object, int, str, str], None]


async def listen_forever(
    engine: AsyncEngine,
    channels: Mapping[str, OnNotify],
    *,
    on_listening: Callable[[bool], None],
    on_lost: Callable[[], None] = lambda: None,
    ping_s: float = PING_S,
    retry_s: float = RETRY_S,
) -> None:
    """LISTEN on each of ``channels`` (its callback called on each NOTIFY) until cancelled, on
    one connection. ``on_listening(back)`` runs each time the LISTEN takes effect (``back``:
    after a loss); ``on_lost`` when it is lost."""
    names = ", ".join(channels)
    lost_before = False
    while True:
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                gone = asyncio.Event()

                def on_termination(_conn: object, gone: asyncio.Event = gone) -> None:
                    gone.set()

                driver.add_termination_listener(on_termination)
                for channel, on_notify in channels.items():
                    await driver.add_listener(channel, on_notify)
                if lost_before:
                    log.info("LISTEN connection back", channels=names)
                on_listening(lost_before)
                lost_before = False
                try:
                    while not gone.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(gone.wait(), ping_s)
                        if not gone.is_set():
                            await driver.execute("SELECT 1")
                    raise ConnectionError("the LISTEN connection was closed")
                finally:
                    on_lost()
                    driver.remove_termination_listener(on_termination)
                    if driver.is_closed():
                        await conn.invalidate()
                    else:
                        with contextlib.suppress(Exception):
                            for channel, on_notify in channels.items():
                                await driver.remove_listener(channel, on_notify)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not lost_before:
                log.warning("LISTEN connection lost; reconnecting", channels=names, error=str(exc))
            lost_before = True
        await asyncio.sleep(retry_s)
