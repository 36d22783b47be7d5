"""The daily roll-up of the ledger: what each tenant's settled requests add up to per day, model
and job status (`usage_daily`). Written with each settlement, in its transaction, so it always
equals the sum of the settled ledger; rebuilt from the ledger on demand. The reads of usage
read it (app.usage.service)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

import asyncpg
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import driver_of
from app.models import UsageDaily, UsageRecord, UsageStatus

# A settled request added to its tenant's day, model and job status (kept in the settlement's
# transaction: the roll-up always equals the sum of the settled ledger).
_ROLL_UP = """
    INSERT INTO usage_daily (tenant_id, day, model, job_status, unit, requests, units,
        cost_micros, cost_nanos)
    VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8)
    ON CONFLICT (tenant_id, day, model, job_status) DO UPDATE SET
        requests = usage_daily.requests + 1,
        units = usage_daily.units + excluded.units,
        cost_micros = usage_daily.cost_micros + excluded.cost_micros,
        cost_nanos = usage_daily.cost_nanos + excluded.cost_nanos,
        updated_at = now()
"""


async def roll_up(
    executor: AsyncSession | asyncpg.Connection,
    *,
    tenant_id: uuid.UUID,
    model: str,
    job_status: str | None,
    unit: str,
    units: Decimal | None,
    cost_micros: int,
    cost_nanos: int,
    settled_at: datetime,
) -> None:
    """A request settled at ``settled_at``, added to its tenant's day, model and job status, in
    the caller's transaction (a session's, or a raw connection's)."""
    conn = await driver_of(executor)
    await conn.execute(
        _ROLL_UP,
        tenant_id,
        settled_at.date(),
        model,
        job_status or "unknown",
        unit,
        units or 0,
        cost_micros,
        cost_nanos,
    )


async def rebuild_rollups(session: AsyncSession, start: date, end: date) -> None:
    """Recompute the daily rollups of [start, end) from the ledger (deterministic repair)."""
    await session.execute(delete(UsageDaily).where(UsageDaily.day >= start, UsageDaily.day < end))
    day = func.date(func.timezone("UTC", UsageRecord.settled_at))
    rows = await session.execute(
        select(
            UsageRecord.tenant_id,
            day,
            UsageRecord.model,
            func.coalesce(UsageRecord.job_status, "unknown"),
            func.min(UsageRecord.unit),
            func.count(),
            func.sum(UsageRecord.units),
            func.sum(UsageRecord.cost_micros),
            func.sum(UsageRecord.cost_nanos),
        )
        .where(UsageRecord.status == UsageStatus.settled, day >= start, day < end)
        .group_by(UsageRecord.tenant_id, day, UsageRecord.model, UsageRecord.job_status)
    )
    for tenant_id, d, model, status, unit, n, units, cost, nanos in rows:
        session.add(
            UsageDaily(
                tenant_id=tenant_id,
                day=d,
                model=model,
                job_status=status,
                unit=unit,
                requests=n,
                units=units or 0,
                cost_micros=cost or 0,
                cost_nanos=nanos or 0,
            )
        )
    await session.flush()
