"""Budgets that hold under concurrency: reserve → settle, fail closed.

A job's estimated cost is reserved in the job's own transaction, under the row lock of the
tenant's current budget period, so concurrent creates (from any number of API processes) queue on
that lock and spent + reserved can never pass the budget. Completion settles the reservation to
the real cost; failure and cancellation release it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import NeedsSession, driver_of
from app.kit.clock import utcnow
from app.kit.money import micros_to_usd
from app.kit.problems import ProblemError
from app.models import BudgetPeriod, Tenant, UsageRecord
from app.usage.periods import period_bounds


class BudgetExceeded(ProblemError):
    status = 402
    code = "budget_exceeded"


@dataclass(frozen=True)
class BudgetView:
    budget_micros: int
    period_start: datetime
    period_end: datetime
    spent_micros: int
    reserved_micros: int

    @property
    def remaining_micros(self) -> int:
        return max(0, self.budget_micros - self.spent_micros - self.reserved_micros)

    def to_dict(self) -> dict[str, object]:
        return {
            "budget_usd": micros_to_usd(self.budget_micros),
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "spent_usd": micros_to_usd(self.spent_micros),
            "reserved_usd": micros_to_usd(self.reserved_micros),
            "remaining_usd": micros_to_usd(self.remaining_micros),
        }


async def _period_row(
    session: AsyncSession, tenant: Tenant, at: datetime, *, lock: bool
) -> BudgetPeriod:
    start, end = period_bounds(tenant.budget_period, at, tenant.budget_anchor)
    stmt = select(BudgetPeriod).where(
        BudgetPeriod.tenant_id == tenant.id, BudgetPeriod.period_start == start
    )
    if lock:
        stmt = stmt.with_for_update()
    stmt = stmt.execution_options(populate_existing=True)
    row = (await session.scalars(stmt)).first()
    if row is None:
        # First use of the period: seed it from the ledger (a budget set mid-month counts the
        # month's spend so far). A concurrent creator may win the insert; both then lock it.
        spent = await _ledger_spent(session, tenant.id, start, end)
        await session.execute(
            insert(BudgetPeriod)
            .values(
                tenant_id=tenant.id,
                period_start=start,
                period_end=end,
                spent_micros=spent,
                reserved_micros=0,
            )
            .on_conflict_do_nothing()
        )
        row = (await session.scalars(stmt)).one()
    return row


async def _ledger_spent(
    session: AsyncSession, tenant_id: uuid.UUID, start: datetime, end: datetime
) -> int:
    """What the ledger already says was spent in a period: seeds a period row created after the
    fact (a budget set mid-month counts the month's spend so far)."""
    total = await session.scalar(
        select(func.coalesce(func.sum(UsageRecord.cost_micros), 0)).where(
            UsageRecord.tenant_id == tenant_id,
            UsageRecord.settled_at >= start,
            UsageRecord.settled_at < end,
        )
    )
    return int(total or 0)


async def view(session: AsyncSession, tenant: Tenant) -> BudgetView | None:
    if tenant.budget_micros is None:
        return None
    row = await _period_row(session, tenant, utcnow(), lock=False)
    return BudgetView(
        tenant.budget_micros,
        row.period_start,
        row.period_end,
        row.spent_micros,
        row.reserved_micros,
    )


async def check(session: AsyncSession, tenant: Tenant, amount_micros: int) -> BudgetView | None:
    """Would ``amount`` fit? (dry runs; takes no lock and reserves nothing)."""
    current = await view(session, tenant)
    if current is not None and amount_micros > current.remaining_micros:
        raise _exceeded(current, amount_micros)
    return current


@dataclass(frozen=True, slots=True)
class CurrentBudget:
    """A tenant's budget in its current period, for the operator's gauges."""

    tenant_id: uuid.UUID
    budget_micros: int
    spent_micros: int
    reserved_micros: int

    @property
    def remaining_micros(self) -> int:
        return max(0, self.budget_micros - self.spent_micros - self.reserved_micros)


# A period's row is made by its first reservation: before that the period has reserved nothing,
# and counts as spent what the row will be seeded with, the ledger's settled spend in it (taken
# as nothing here: a gauge need not pay for that sum).
_CURRENT_BUDGETS = """
    SELECT t.id AS tenant_id, t.budget_micros,
           coalesce(p.spent_micros, 0) AS spent_micros,
           coalesce(p.reserved_micros, 0) AS reserved_micros
    FROM tenants t
    LEFT JOIN budget_periods p ON p.tenant_id = t.id
         AND p.period_start <= statement_timestamp() AND p.period_end > statement_timestamp()
    WHERE t.budget_micros IS NOT NULL
"""


async def current_budgets(conn: asyncpg.Connection) -> list[CurrentBudget]:
    """Every budgeted tenant's current period, in one statement."""
    return [CurrentBudget(**dict(row)) for row in await conn.fetch(_CURRENT_BUDGETS)]


def no_budget_sql(tenant_param: str) -> str:
    """SQL that is true when the tenant has no budget: a job it creates reserves nothing. For a
    statement that inserts a job only then (app.jobs.store), read in that very statement."""
    return (
        "NOT EXISTS (SELECT 1 FROM tenants "  # noqa: S608 (a parameter's name, not a value)
        f"WHERE id = {tenant_param} AND budget_micros IS NOT NULL)"
    )


class PriceUnknown(ProblemError):
    status = 503
    code = "price_unknown"


@dataclass(frozen=True)
class Reservation:
    period_start: datetime
    micros: int


async def reserve(
    session: AsyncSession, tenant_id: uuid.UUID, amount_micros: int | None, *, model: str
) -> Reservation | None:
    """Reserve a new job's estimated cost in the tenant's current period, under the period's
    row lock, if the tenant has a budget (read now, never from a cache). None: no budget, nothing
    reserved. Fails closed: a budget cannot be checked against an unknown price."""
    tenant = await session.get(Tenant, tenant_id, populate_existing=True)
    if tenant is None or tenant.budget_micros is None:
        return None
    if amount_micros is None:
        raise PriceUnknown(
            f"No price is configured for {model}; the budget cannot be checked. The operator "
            "has been alerted.",
            param="model",
        )
    row = await _period_row(session, tenant, utcnow(), lock=True)
    current = BudgetView(
        tenant.budget_micros,
        row.period_start,
        row.period_end,
        row.spent_micros,
        row.reserved_micros,
    )
    if amount_micros > current.remaining_micros:
        raise _exceeded(current, amount_micros)
    row.reserved_micros += amount_micros
    return Reservation(row.period_start, amount_micros)


def _exceeded(current: BudgetView, amount: int) -> BudgetExceeded:
    return BudgetExceeded(
        f"This job's estimated cost ({micros_to_usd(amount)} USD) exceeds the budget's "
        f"remaining {micros_to_usd(current.remaining_micros)} USD for the period ending "
        f"{current.period_end.isoformat()}.",
        extra={
            "estimated_cost_usd": micros_to_usd(amount),
            "remaining_usd": micros_to_usd(current.remaining_micros),
            "budget_usd": micros_to_usd(current.budget_micros),
            "period_end": current.period_end.isoformat(),
        },
    )


async def settle(
    executor: AsyncSession | asyncpg.Connection,
    *,
    tenant_id: uuid.UUID,
    period_start: datetime | None,
    reserved_micros: int,
    cost_micros: int,
) -> None:
    """Turn a job's reservation into its real cost (0 on failure/cancel: a release). The caller
    records that the job holds no reservation any more. On a raw connection (the jobs store's
    transitions) only once ``check_settles_on_driver`` let it, before anything was written."""
    if isinstance(executor, asyncpg.Connection):
        await _settle_on(executor, tenant_id, period_start, reserved_micros, cost_micros)
        return
    session = executor
    tenant = await session.get(Tenant, tenant_id)
    if period_start is None:
        # Nothing reserved (no budget when it was created): the spend still counts.
        if tenant is not None:
            await charge(session, tenant, cost_micros)
        return
    row = await _reserved_period(session, tenant_id, period_start)
    if row is None:
        return
    row.reserved_micros = max(0, row.reserved_micros - reserved_micros)
    row.spent_micros += cost_micros
    if tenant is not None and tenant.budget_micros is not None:
        await _thresholds(
            session, tenant.id, row.period_start, row.spent_micros, tenant.budget_micros,
            tenant.budget_thresholds,
        )  # fmt: skip


async def check_settles_on_driver(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, period_start: datetime | None
) -> None:
    """NeedsSession when ``settle`` of a spend cannot run on a raw connection: a job that
    reserved nothing (no budget when it was created) of a tenant that has a budget now, whose
    spend is charged to the current period, a row that may need seeding (the session's way).
    Asked before the settlement writes anything, so that the session writes (and counts) it
    once."""
    if period_start is not None:
        return
    budget = await conn.fetchval("SELECT budget_micros FROM tenants WHERE id = $1", tenant_id)
    if budget is not None:
        raise NeedsSession("a spend with no reservation, charged to the current period")


# What ``settle`` does to the period a reservation was taken in, as one statement: the UPDATE
# takes the row lock the session's SELECT ... FOR UPDATE takes.
_SETTLE_PERIOD = """
    UPDATE budget_periods SET reserved_micros = greatest(0, reserved_micros - $3),
        spent_micros = spent_micros + $4
    WHERE tenant_id = $1 AND period_start = $2
    RETURNING spent_micros, (SELECT budget_micros FROM tenants WHERE id = $1) AS budget_micros,
        (SELECT budget_thresholds FROM tenants WHERE id = $1) AS thresholds
"""


async def _settle_on(
    conn: asyncpg.Connection,
    tenant_id: uuid.UUID,
    period_start: datetime | None,
    reserved_micros: int,
    cost_micros: int,
) -> None:
    if period_start is None:
        # Nothing reserved: a spend was checked to have no budget to count in
        # (check_settles_on_driver), and a release has nothing to release.
        return
    row = await conn.fetchrow(_SETTLE_PERIOD, tenant_id, period_start, reserved_micros, cost_micros)
    if row is not None and row["budget_micros"] is not None:
        await _thresholds(
            conn, tenant_id, period_start, row["spent_micros"], row["budget_micros"],
            row["thresholds"],
        )  # fmt: skip


async def _reserved_period(
    session: AsyncSession, tenant_id: uuid.UUID, period_start: datetime
) -> BudgetPeriod | None:
    """The (locked) period a job's reservation was taken in."""
    stmt = (
        select(BudgetPeriod)
        .where(BudgetPeriod.tenant_id == tenant_id, BudgetPeriod.period_start == period_start)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).first()


async def charge(session: AsyncSession, tenant: Tenant, cost_micros: int) -> None:
    """Spend with no reservation behind it (an orphan request, or a job created before the
    budget existed), counted in the current period."""
    if not cost_micros or tenant.budget_micros is None:
        return
    row = await _period_row(session, tenant, utcnow(), lock=True)
    row.spent_micros += cost_micros
    assert tenant.budget_micros is not None
    await _thresholds(
        session, tenant.id, row.period_start, row.spent_micros, tenant.budget_micros,
        tenant.budget_thresholds,
    )  # fmt: skip


async def adjust(
    session: AsyncSession,
    *,
    tenant_id: uuid.UUID,
    period_start: datetime | None,
    reserved_micros: int,
    new_estimate_micros: int,
) -> int:
    """Re-price a job's reservation (the preflight measured the video): the job's new reserved
    amount. Raises BudgetExceeded, reserving nothing more, if the difference no longer fits."""
    delta = new_estimate_micros - reserved_micros
    if period_start is None or delta == 0:
        return reserved_micros
    tenant = await session.get(Tenant, tenant_id)
    row = await _reserved_period(session, tenant_id, period_start)
    if row is None or tenant is None or tenant.budget_micros is None:
        return reserved_micros
    current = BudgetView(
        tenant.budget_micros,
        row.period_start,
        row.period_end,
        row.spent_micros,
        row.reserved_micros,
    )
    if delta > 0 and delta > current.remaining_micros:
        raise _exceeded(current, new_estimate_micros)
    row.reserved_micros = max(0, row.reserved_micros + delta)
    return new_estimate_micros


# Every threshold the spend has reached, recorded once each (in order: the outbox trigger on
# budget_events tells tenants in that order).
_THRESHOLDS = """
    INSERT INTO budget_events (tenant_id, period_start, threshold_pct, spent_micros, budget_micros)
    SELECT $1, $2, pct, $3::bigint, $4::bigint FROM unnest($5::integer[]) AS pct
    WHERE $3::bigint::numeric * 100 >= $4::bigint::numeric * pct
    ON CONFLICT DO NOTHING
"""


async def _thresholds(
    executor: AsyncSession | asyncpg.Connection,
    tenant_id: uuid.UUID,
    period_start: datetime,
    spent_micros: int,
    budget_micros: int,
    thresholds: list[int] | None,
) -> None:
    if budget_micros <= 0 or not thresholds:
        return
    conn = await driver_of(executor)
    await conn.execute(
        _THRESHOLDS, tenant_id, period_start, spent_micros, budget_micros, sorted(set(thresholds))
    )
