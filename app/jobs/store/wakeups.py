"""Waking the workers: ``NOTIFY foley_jobs`` after a transition commits, its payload the reason
(lifecycle.Wake) and, when a worker's own store sent it, that worker's name; and the channel
on which every job event is announced."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs import lifecycle

# The workers' wake-ups. A payload is its reason (lifecycle.Wake), then, when a worker's own store
# sent it, "@" and the worker's name (Waker): that worker was woken directly and leaves its own
# NOTIFY alone.
NOTIFY_CHANNEL = "foley_jobs"
_SENDER_MARK = "@"
# Every committed job event but a creation is announced here by a trigger on job_events
# (migration 0008), as "<job_id>:<seq>:<type>": what waits on a job's news listens to it.
EVENTS_CHANNEL = "foley_events"


@dataclass(frozen=True)
class Waker:
    """The worker a store belongs to. A wake-up its own transitions send (``apply``,
    ``apply_found``) reaches it directly once committed (``wake``, given the reason), without the
    round trip through Postgres; their NOTIFYs carry its ``name`` (``wake_reason``), so it can
    leave them alone while every other process still hears them."""

    name: str
    wake: Callable[[lifecycle.Wake], None]


def wake_reason(payload: str) -> tuple[lifecycle.Wake | None, str | None]:
    """A wake-up's reason (None: one this code does not know, from a newer version perhaps)
    and the name of the worker whose store sent it (None: any other sender, such as the API)."""
    reason, _, sender = payload.partition(_SENDER_MARK)
    try:
        return lifecycle.Wake(reason), sender or None
    except ValueError:
        return None, sender or None


def payload_of(reason: lifecycle.Wake, sender: str | None) -> str:
    """The NOTIFY's payload of a wake-up (``sender``: the worker whose store sends it)."""
    return reason if sender is None else f"{reason}{_SENDER_MARK}{sender}"


async def notify_workers(session: AsyncSession, payload: str) -> None:
    """Wake the workers. Delivered at commit, so a worker never sees an uncommitted job."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": NOTIFY_CHANNEL, "payload": payload},
    )
