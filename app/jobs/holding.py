"""``Prefer: wait[=N]`` (RFC 7240): hold a job request until the job is terminal, at most N s.

A held request is a subscription to the job's end on the process's hub (app.jobs.hub): it costs
no query while it waits — only the job's terminal event (or the hub's reconnection, after which
anything may have happened) makes it read the job again, and the deadline makes it read once
more, to answer the job as it then stands. No database connection or transaction is held
meanwhile. A client that hangs up ends its wait at once (its subscription and its timer go).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from starlette.types import Receive

from app.jobs.hub import JobHub, Subscription
from app.models import JobStatus


class HasStatus(Protocol):
    @property
    def status(self) -> JobStatus: ...


J = TypeVar("J", bound=HasStatus)


async def _hung_up(receive: Receive) -> None:
    """Returns when the client disconnects (the server's receive answers ``http.disconnect``
    once the request's body, if any, has been read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def hold(
    hub: JobHub,
    job_id: uuid.UUID,
    read: Callable[[], Awaitable[J]],
    *,
    seconds: float,
    receive: Receive,
) -> J:
    """The job (as ``read`` answers it) once terminal, or as it stands after ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    with hub.subscribe(job_id, terminal_only=True) as sub:
        # Subscribed before reading: an end committed in between still wakes us.
        job = await read()
        if job.status.terminal or seconds <= 0:
            return job
        hangup = loop.create_task(_hung_up(receive))
        try:
            while not job.status.terminal:
                left = deadline - loop.time()
                if left <= 0:
                    return await read()
                if not await _woken_unless_gone(sub, left, hangup):
                    return job  # nobody is there to read an answer
                job = await read()
            return job
        finally:
            hangup.cancel()
            await asyncio.gather(hangup, return_exceptions=True)


async def _woken_unless_gone(sub: Subscription, within: float, hangup: asyncio.Task[None]) -> bool:
    """Waits for a wake-up or ``within`` s (True: read again) or the client's hang-up (False)."""
    waiting = asyncio.ensure_future(sub.wait(within))
    try:
        await asyncio.wait((waiting, hangup), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    return not hangup.done()
