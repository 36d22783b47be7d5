"""Reading usage: summaries from the daily rollups (fast at any ledger size); the detailed CSV
export is app.usage.export. A total is the sum of what each request cost in
nano-dollars, rounded to the micro-dollar once (docs/money.md)."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.clock import utcnow
from app.kit.money import micros_to_usd, nanos_to_micros, nanos_to_usd
from app.kit.problems import InputValidationError
from app.models import UsageDaily, UsageRecord

GroupBy = Literal["day", "month", "model"]


def default_range(start: date | None, end: date | None) -> tuple[date, date]:
    """[from, to): the current calendar month (UTC) by default; `to` is exclusive."""
    today = utcnow().date()
    start = start or today.replace(day=1)
    end = end or (today + timedelta(days=1))
    if end <= start:
        raise InputValidationError(
            [{"param": "to", "code": "invalid_range", "message": "'to' must be after 'from'"}]
        )
    if (end - start).days > 3660:
        raise InputValidationError(
            [{"param": "to", "code": "range_too_long", "message": "at most ten years at once"}]
        )
    return start, end


def _units_out(units: dict[str, Decimal]) -> dict[str, str]:
    return {unit: str(value.normalize() if value else Decimal(0)) for unit, value in units.items()}


async def summary(
    session: AsyncSession,
    *,
    start: date,
    end: date,
    group_by: GroupBy,
    tenant_id: uuid.UUID | None = None,
    by_tenant: bool = False,
) -> dict[str, Any]:
    if group_by == "day":
        key = UsageDaily.day
    elif group_by == "month":
        key = func.date_trunc("month", UsageDaily.day).cast(UsageDaily.day.type)
    else:
        key = UsageDaily.model
    cols = [key.label("k"), UsageDaily.job_status, UsageDaily.unit]
    if by_tenant:
        cols.insert(0, UsageDaily.tenant_id)
    stmt = (
        select(
            *cols,
            func.sum(UsageDaily.requests),
            func.sum(UsageDaily.units),
            func.sum(UsageDaily.cost_nanos),
        )
        .where(UsageDaily.day >= start, UsageDaily.day < end)
        .group_by(*cols)
    )
    if tenant_id is not None:
        stmt = stmt.where(UsageDaily.tenant_id == tenant_id)
    groups: dict[tuple[Any, ...], dict[str, Any]] = {}
    total = 0
    for row in (await session.execute(stmt)).all():
        if by_tenant:
            tid, k, status, unit, n, units, cost = row
            gk: tuple[Any, ...] = (tid, k)
        else:
            k, status, unit, n, units, cost = row
            gk = (k,)
        g = groups.setdefault(
            gk, {"jobs": 0, "by_status": defaultdict(int), "units": defaultdict(Decimal), "cost": 0}
        )
        g["jobs"] += n
        g["by_status"][status] += n
        g["units"][unit] += units or Decimal(0)
        g["cost"] += cost or 0
        total += cost or 0
    data = []
    for gk, g in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        k = gk[-1]
        entry: dict[str, Any] = {}
        if by_tenant:
            entry["tenant"] = str(gk[0])
        entry[group_by] = (
            k.isoformat()[:7]
            if group_by == "month"
            else (k.isoformat() if isinstance(k, date) else k)
        )
        entry.update(
            jobs=g["jobs"],
            jobs_by_status=dict(g["by_status"]),
            units=_units_out(g["units"]),
            cost_usd=micros_to_usd(nanos_to_micros(g["cost"])),
        )
        data.append(entry)
    return {
        "object": "usage_summary",
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": group_by,
        "data": data,
        "total_cost_usd": micros_to_usd(nanos_to_micros(total)),
    }


async def spend_this_month(conn: asyncpg.Connection) -> dict[uuid.UUID, int]:
    """Each tenant's settled spend this calendar month (UTC) in nano-dollars, from the daily
    rollups (a row per tenant × model × day × status: a month is a few hundred per tenant)."""
    rows = await conn.fetch(
        "SELECT tenant_id, sum(cost_nanos) AS nanos FROM usage_daily "
        "WHERE day >= date_trunc('month', statement_timestamp() AT TIME ZONE 'UTC')::date "
        "GROUP BY tenant_id"
    )
    return {row["tenant_id"]: int(row["nanos"] or 0) for row in rows}


async def usage_of_jobs(
    session: AsyncSession, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """The `usage` member of job resources (the job's own request; orphans are in the ledger)."""
    if not job_ids:
        return {}
    rows = (
        await session.scalars(
            select(UsageRecord).where(
                UsageRecord.job_id.in_(job_ids), UsageRecord.orphan.is_(False)
            )
        )
    ).all()
    return {
        r.job_id: {
            "unit": r.unit,
            "units": None if r.units is None else str(r.units.normalize()),
            "estimated_cost_usd": micros_to_usd(r.estimated_cost_micros),
            "cost_usd": micros_to_usd(r.cost_micros),
            "cost_usd_exact": nanos_to_usd(r.cost_nanos),
            "status": r.status.value,
        }
        for r in rows
        if r.job_id is not None
    }
