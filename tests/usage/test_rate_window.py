"""The sliding-window rate limit never admits more than its rate in any 60 s (app.usage.limits)."""

from __future__ import annotations

import asyncio
import bisect
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from app.kit.clock import frozen_at
from app.models import Tenant
from app.usage import limits
from tests.conftest import TenantCreds


async def attempt(sessionmaker: async_sessionmaker, tenant_id: uuid.UUID, at: datetime) -> bool:
    with frozen_at(at):
        try:
            state = await limits.hit(sessionmaker, tenant_id, 60)
        except limits.RateLimited as exc:
            retry = int(exc.headers["Retry-After"])
            assert retry >= 1 and exc.extra["retry_after_s"] == retry
            return False
    assert 0 <= state.remaining < 60
    return True


def most_in_any_window(admitted: list[datetime]) -> int:
    # The window that holds the most starts at one of the admissions.
    return max(
        bisect.bisect_left(admitted, t + timedelta(seconds=60)) - i for i, t in enumerate(admitted)
    )


@pytest.mark.parametrize("step_ms", [250, 730])
async def test_no_60_s_window_holds_more_than_the_rate(
    sessionmaker: async_sessionmaker, tenant: TenantCreds, step_ms: int
) -> None:
    tenant_id = uuid.UUID(tenant.id)
    start = datetime(2031, 3, 1, 12, 0, 59, 500_000, tzinfo=UTC)
    # A burst across the minute boundary (what a fixed window admitted twice), then a steady
    # stream faster than the rate for three minutes.
    moments = [start + timedelta(milliseconds=5 * i) for i in range(150)]
    moments += [
        moments[-1] + timedelta(milliseconds=step_ms * i) for i in range(1, 180_000 // step_ms)
    ]
    moments = [m for m in moments if m < start + timedelta(minutes=3)]
    admitted = [m for m in moments if await attempt(sessionmaker, tenant_id, m)]
    assert most_in_any_window(admitted) == 60
    # ... and the limit is a rate, not a single burst: the stream goes on being admitted.
    assert admitted[-1] > start + timedelta(minutes=2)
    assert len(admitted) >= 120


async def test_a_refused_creation_is_not_counted(
    sessionmaker: async_sessionmaker, tenant: TenantCreds
) -> None:
    tenant_id = uuid.UUID(tenant.id)
    t0 = datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)
    for i in range(60):
        assert await attempt(sessionmaker, tenant_id, t0 + timedelta(milliseconds=i))
    for i in range(100):  # hammering while refused does not push the window out
        assert not await attempt(
            sessionmaker, tenant_id, t0 + timedelta(seconds=30, milliseconds=i)
        )
    assert await attempt(sessionmaker, tenant_id, t0 + timedelta(seconds=61))


async def test_concurrent_creations_in_separate_transactions_never_overshoot(
    engine: AsyncEngine,
) -> None:
    # Committed data, separate connections: what several API processes do at once.
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    tenant_id = uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        session.add(Tenant(id=tenant_id, name="rate-race"))
    try:
        with frozen_at(datetime(2031, 3, 1, 12, 0, 0, tzinfo=UTC)):
            outcomes = await asyncio.gather(
                *(limits.hit(sessionmaker, tenant_id, 5) for _ in range(20)),
                return_exceptions=True,
            )
        admitted = [o for o in outcomes if isinstance(o, limits.RateState)]
        assert len(admitted) == 5
        assert all(isinstance(o, limits.RateLimited) for o in outcomes if o not in admitted)
        assert sorted(s.remaining for s in admitted) == [0, 1, 2, 3, 4]
    finally:
        async with sessionmaker() as session, session.begin():
            await session.execute(delete(Tenant).where(Tenant.id == tenant_id))
