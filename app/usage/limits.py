"""Per-tenant request rate on job creation: fixed one-minute windows counted in Postgres, so the
limit holds across any number of API processes. Answers carry the IETF RateLimit headers
(draft-ietf-httpapi-ratelimit-headers: ``RateLimit-Policy: "jobs";q=60;w=60`` and
``RateLimit: "jobs";r=12;t=31``)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.kit.clock import utcnow
from app.kit.problems import ProblemError
from app.models import RateLimitWindow

WINDOW_S = 60
POLICY = "jobs"


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


async def hit(
    sessionmaker: async_sessionmaker[AsyncSession], tenant_id: uuid.UUID, limit: int
) -> RateState:
    """Count one creation; raise RateLimited past the limit. Its own short transaction: the
    counter's row lock must not be held for the whole request."""
    now = utcnow()
    window = now.replace(second=0, microsecond=0)
    reset = max(1, math.ceil((window + timedelta(seconds=WINDOW_S) - now).total_seconds()))
    async with sessionmaker() as session, session.begin():
        # A counter lost in a crash costs nothing; not waiting for the WAL flush shortens the
        # time its row lock is held, which every create of the tenant queues on.
        await session.execute(text("SET LOCAL synchronous_commit = off"))
        stmt = insert(RateLimitWindow).values(tenant_id=tenant_id, window_start=window, count=1)
        count = (
            await session.execute(
                stmt.on_conflict_do_update(
                    index_elements=[RateLimitWindow.tenant_id, RateLimitWindow.window_start],
                    set_={"count": RateLimitWindow.count + 1},
                ).returning(RateLimitWindow.count)
            )
        ).scalar_one()
    state = RateState(limit=limit, remaining=max(0, limit - count), reset_s=reset)
    if count > limit:
        raise RateLimited(
            f"More than {limit} job creations in a minute; retry in {reset} s.",
            headers={**state.headers(), "Retry-After": str(reset)},
            extra={"limit": limit, "retry_after_s": reset},
        )
    return state


async def prune(session: AsyncSession) -> int:
    cutoff = utcnow() - timedelta(minutes=10)
    result = await session.execute(
        delete(RateLimitWindow).where(RateLimitWindow.window_start < cutoff)
    )
    return result.rowcount or 0
