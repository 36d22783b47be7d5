"""The jobs table summed up for the operator (the gauges of app.telemetry.gauges, the fleet view of
``GET /v1/admin/fleet``): one statement
over the live jobs only (the claims' partial index bounds it), however many jobs ever ran."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

_LIVE_JOBS = """
    SELECT model, status::text AS status, count(*) AS jobs, min(created_at) AS oldest,
           count(*) FILTER (WHERE status = 'queued' AND submit_state = 'pending') AS waiting,
           min(created_at) FILTER (WHERE status = 'queued' AND submit_state = 'pending')
               AS oldest_waiting,
           -- a request at fal, or on its way there: what FOLEY_FAL_CONCURRENCY bounds
           -- (a split job holds none: its segments do)
           count(*) FILTER (WHERE submit_state NOT IN ('pending', 'split')
                                  AND NOT upstream_completed)
               AS at_fal
    FROM jobs
    WHERE status IN ('queued', 'starting', 'processing')
    GROUP BY model, status
"""


@dataclass(frozen=True, slots=True)
class LiveJobs:
    """Live jobs of one model in one status. ``waiting``: not sent to fal yet (the queue);
    ``at_fal``: holding a slot of the account's concurrency."""

    model: str
    status: str
    jobs: int
    oldest: datetime  # the oldest's creation
    waiting: int
    oldest_waiting: datetime | None
    at_fal: int


async def live_jobs(conn: asyncpg.Connection) -> list[LiveJobs]:
    return [LiveJobs(**dict(row)) for row in await conn.fetch(_LIVE_JOBS)]
