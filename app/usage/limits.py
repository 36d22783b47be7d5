"""Per-tenant request rate on job creation: a sliding window counted in Postgres, so the limit
holds across any number of API processes. Answers carry the IETF RateLimit headers
(draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy: "jobs";q=60;w=60`` and
``RateLimit: "jobs";r=12;t=31``).

Admissions are counted in one-second buckets (``rate_limit_windows``, one row per tenant and
second), and a creation is admitted only while the buckets of the last 61 seconds, the current
one included, hold fewer than the limit. Any 60-second window, wherever it starts, lies within
the 61 buckets ending at its last admission, so no window ever holds more than the limit; the
price is that a slot frees up to a second later than a per-request log would free it. A fixed
window (what this was) admitted twice the limit across a minute boundary (120 creations in
2.3 s at 60/min). The bucket rows bound the work per check at 61 rows whatever the rate.

The check and the count are one decision under a per-tenant transaction-level advisory lock:
two processes cannot both see the last free slot.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.kit.clock import utcnow
from app.kit.problems import ProblemError
from app.models import RateLimitWindow

WINDOW_S = 60
# Buckets counted: the window plus the bucket it starts inside (see the module's docstring).
SPAN = timedelta(seconds=WINDOW_S + 1)
POLICY = "jobs"
# The first key of pg_advisory_xact_lock(int4, int4): this lock's own namespace, apart from the
# single-key locks of migrations and the dispatch claim.
_LOCK_CLASS = 72190002


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": f'"{POLICY}";q={self.limit};w={WINDOW_S}',
            "RateLimit": f'"{POLICY}";r={self.remaining};t={self.reset_s}',
        }


class RateLimited(ProblemError):
    status = 429
    code = "rate_limited"


_HIT = text(
    """
    WITH recent AS (
        SELECT window_start, count FROM rate_limit_windows
        WHERE tenant_id = :tenant AND window_start > :since
    ), total AS (
        SELECT coalesce(sum(count), 0)::int AS n FROM recent
    ), admitted AS (
        INSERT INTO rate_limit_windows (tenant_id, window_start, count)
        SELECT :tenant, :bucket, 1 FROM total WHERE n < :limit
        ON CONFLICT (tenant_id, window_start)
        DO UPDATE SET count = rate_limit_windows.count + 1
        RETURNING 1
    )
    SELECT (SELECT n FROM total) AS n,
           (SELECT count(*) FROM admitted)::int AS admitted,
           array(SELECT window_start FROM recent ORDER BY window_start) AS starts,
           array(SELECT count FROM recent ORDER BY window_start) AS counts
    """
)


def _lock_key(tenant_id: uuid.UUID) -> int:
    return int.from_bytes(tenant_id.bytes[:4], "big", signed=True)


async def hit(
    sessionmaker: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, limit: int
) -> RateState:
    """Count one creation; raise RateLimited when the last 60 s already hold ``limit``. Its own
    short transaction: the tenant's lock must not be held for the whole request."""
    now = utcnow()
    bucket = now.replace(microsecond=0)
    since = bucket - SPAN
    async with sessionmaker() as session, session.begin():
        # A count lost in a crash costs nothing; not waiting for the WAL flush shortens the
        # time the tenant's lock is held, which every create of the tenant queues on. The lock
        # is taken before, not inside, the counting statement: its snapshot must see the counts
        # committed by whoever held the lock before.
        await session.execute(
            text(
                "SELECT pg_advisory_xact_lock(:cls, :key), "
                "set_config('synchronous_commit', 'off', true)"
            ),
            {"cls": _LOCK_CLASS, "key": _lock_key(tenant_id)},
        )
        row = (
            await session.execute(
                _HIT, {"tenant": tenant_id, "since": since, "bucket": bucket, "limit": limit}
            )
        ).one()
    buckets = list(zip(row.starts, row.counts, strict=True))
    if row.admitted:
        buckets = _add(buckets, bucket)
    used = row.n + row.admitted
    if not row.admitted:
        # Free again once enough of the oldest buckets have left the window for one more.
        retry = _seconds_until(_leaves_at(buckets, used - limit + 1), now)
        state = RateState(limit=limit, remaining=0, reset_s=retry)
        raise RateLimited(
            f"{limit} job creations in the last {WINDOW_S} s already; retry in {retry} s.",
            headers={**state.headers(), "Retry-After": str(retry)},
            extra={"limit": limit, "retry_after_s": retry},
        )
    # t: when the oldest creation counted leaves the window (a slot frees up)
    reset = _seconds_until(_leaves_at(buckets, 1), now)
    return RateState(limit=limit, remaining=max(0, limit - used), reset_s=reset)


def _add(buckets: list[tuple[datetime, int]], bucket: datetime) -> list[tuple[datetime, int]]:
    if buckets and buckets[-1][0] == bucket:
        return [*buckets[:-1], (bucket, buckets[-1][1] + 1)]
    return [*buckets, (bucket, 1)]


def _leaves_at(buckets: list[tuple[datetime, int]], need: int) -> datetime:
    """When the oldest buckets holding at least ``need`` creations are all out of the window."""
    freed = 0
    for start, count in buckets:
        freed += count
        if freed >= need:
            return start + SPAN
    return buckets[-1][0] + SPAN


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


async def prune(session: AsyncSession) -> int:
    cutoff = utcnow() - timedelta(minutes=10)
    result = await session.execute(
        delete(RateLimitWindow).where(RateLimitWindow.window_start < cutoff)
    )
    return result.rowcount or 0
