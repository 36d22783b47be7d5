"""A job's events as Server-Sent Events: ``GET /v1/jobs/{id}/events`` with
``Accept: text/event-stream``.

Each event is one SSE message — ``id:`` its seq, ``event:`` its type, ``data:`` the event as the
JSON list gives it — everything so far first (or only what follows ``Last-Event-ID``), then each
new one as it commits, a comment every ``FOLEY_EVENT_STREAM_KEEPALIVE`` so proxies keep the
connection, and the end of the stream after the job's terminal event. Any API process serves
any stream: the events are read from ``job_events`` by seq, and the process's hub
(app.jobs.hub) only says when to read again. No database connection is held between reads.

A stream resumed after the job's end has nothing to send: it answers ``204``, which tells an
``EventSource`` to stop reconnecting (the HTML standard's rule). A read that fails mid-stream
(the database went away) ends the stream; the client resumes with ``Last-Event-ID``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from app.jobs import service, store
from app.jobs.hub import TERMINAL_EVENTS, JobHub, Subscription
from app.jobs.schemas import JobEventOut
from app.models import JobEvent, Tenant

log = structlog.get_logger(__name__)

EVENT_STREAM = "text/event-stream"
KEEP_ALIVE = b": keep-alive\n\n"
PAGE = 100

Reader = Callable[[int], Awaitable[tuple[Sequence[JobEvent], bool]]]


def wants_stream(accept: str | None) -> bool:
    """Whether the client asked for the event stream rather than the JSON list."""
    return accept is not None and EVENT_STREAM in accept.lower()


def frame(event: JobEvent) -> bytes:
    data = JobEventOut.model_validate(event, from_attributes=True).model_dump_json()
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


async def open_stream(
    *,
    hub: JobHub,
    sessionmaker: async_sessionmaker[AsyncSession],
    tenant: Tenant,
    job_id: uuid.UUID,
    after: int,
    keepalive_s: float,
) -> Response:
    """The stream's response, its first events read (a job of another tenant is a 404, an
    unreachable database a 503, before anything is streamed)."""

    created_at = None  # the job's, once read: each read then touches one partition

    async def read(after_seq: int) -> tuple[Sequence[JobEvent], bool]:
        async with sessionmaker() as session:
            return await store.events_for_tenant(
                session,
                tenant.id,
                job_id,
                after_seq=after_seq,
                limit=PAGE,
                job_created_at=created_at,
            )

    # Subscribed before the first read: an event committed in between still wakes the stream.
    sub = hub.subscribe(job_id)
    try:
        async with sessionmaker() as session:
            job = await service.get_job(session, tenant, job_id)
            created_at = job.created_at
            rows, more = await store.events_for_tenant(
                session, tenant.id, job_id, after_seq=after, limit=PAGE, job_created_at=created_at
            )
    except BaseException:
        sub.close()
        raise
    if job.status.terminal and not rows:
        sub.close()
        return Response(status_code=204)
    return EventStream(_frames(sub, read, rows, more, after, keepalive_s), sub)


async def _frames(
    sub: Subscription,
    read: Reader,
    rows: Sequence[JobEvent],
    more: bool,
    last: int,
    keepalive_s: float,
) -> AsyncIterator[bytes]:
    while True:
        if rows:
            yield b"".join(frame(r) for r in rows)
            last = rows[-1].seq
            if any(r.type in TERMINAL_EVENTS for r in rows):
                return
        if not more:
            while not await sub.wait(keepalive_s):
                yield KEEP_ALIVE
        try:
            rows, more = await read(last)
        except Exception as exc:
            log.warning("event stream read failed", job_id=str(sub.job_id), error=str(exc))
            return


class EventStream(StreamingResponse):
    """A streamed response that lets go of its subscription however it ends: finished, the
    client gone (Starlette cancels the stream on the disconnect), or never started."""

    media_type = EVENT_STREAM

    def __init__(self, content: AsyncIterator[bytes], sub: Subscription) -> None:
        # no-cache: an intermediary must not answer a later request from this one; the
        # X-Accel-Buffering header asks nginx not to hold events back in its buffer.
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.sub = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.sub.close()
