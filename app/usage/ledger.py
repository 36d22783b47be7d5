"""The usage ledger: one record per billable upstream request, exactly once, in nano-dollars
(fal's precision) and micro-dollars (that request's amount rounded; docs/money.md).

* A record is created when fal accepts a request (its id is known), as ``estimated``.
* When the job ends, the record is priced by the billing rules below and ``settled`` in the same
  transaction as the job's final state, the budget settlement and the daily rollup, so they can
  never disagree. Unique on fal's request id: duplicate webhooks, retries and crashed workers
  cannot record a request twice, and a settled record is never settled again.
* No price in force → ``unpriced``: settlement is blocked (the budget reservation stays held),
  an error is logged and ``foley_usage_unpriced_total`` counts it. Never a silent $0.

Billing rules (fal's, as far as fal documents them; the emulator bills the same way):
success bills its units (one video, ``metrics.inference_time`` compute seconds, or the output
seconds asked for times the samples); a 5xx is
never billed; a 422 from the runner after fal accepted the request bills its compute seconds
(``FOLEY_BILL_UPSTREAM_422``, on by default; off waives them), and is flagged either way; a
request canceled while queued at fal costs nothing, one canceled while running bills its compute
seconds so far on compute-second models.
"""

from __future__ import annotations

import enum
import functools
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter
from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import CATALOG
from app.db.driver import driver_of
from app.kit.clock import utcnow
from app.kit.money import NANOS_PER_MICRO, cost_nanos, nanos_to_micros
from app.models import Job, Tenant, UsageRecord, UsageStatus
from app.usage import budgets, rollups
from app.usage.billing import CACHE_HIT, Outcome, billable_units
from app.usage.prices import HIT_UNIT, price_at

log = structlog.get_logger(__name__)

UNPRICED = Counter(
    "foley_usage_unpriced_total",
    "Usage that could not be settled because no price was in force (blocks settlement).",
    ["model"],
)
SETTLED = Counter("foley_usage_settled_total", "Usage records settled.", ["model", "outcome"])


# Every request fal accepted for a job is recorded once: at its submit's answer, on the hot path
# to a job's first status (a raw statement, see app.db.driver), or later by its webhook.
_RECORD_REQUEST = """
    INSERT INTO usage_records (id, upstream_request_id, tenant_id, job_id, model, endpoint, unit,
        estimated_cost_micros, status, orphan, flagged, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'estimated', $9, $9, $10)
    ON CONFLICT (upstream_request_id) DO NOTHING
"""


async def record_request(
    executor: AsyncSession | asyncpg.Connection,
    job: Job,
    request_id: str,
    *,
    unit: str,
    orphan: bool = False,
) -> None:
    """fal accepted a request for this job: put it on the ledger (once), in the caller's
    transaction — a session's, or a raw connection's (the jobs store's transitions)."""
    conn = await driver_of(executor)
    await conn.execute(
        _RECORD_REQUEST,
        uuid.uuid4(),
        request_id,
        job.tenant_id,
        job.id,
        job.model,
        job.endpoint,
        unit,
        job.estimated_cost_micros,
        orphan,
        utcnow(),
    )


async def settle_job(
    executor: AsyncSession | asyncpg.Connection,
    job: Job,
    outcome: Outcome | None,
    *,
    bill_422: bool,
) -> bool:
    """Settle the job's usage and its budget reservation, in the caller's transaction (the
    jobs store, which then records the job as settled). False when blocked: no price in force,
    the reservation stays held until one exists.

    ``outcome`` is None when no request reached fal (canceled here, refused at submit): there is
    nothing on the ledger and the reservation is simply released.

    The ledger's writes are the same statements either way (on a session, they run on its
    connection); the budget's are the session's or the connection's (app.usage.budgets). On a
    raw connection (the jobs store's transitions: most jobs end there), a spend the budget must
    charge to a period of its own is NeedsSession, raised before anything was written."""
    conn = await driver_of(executor)
    if isinstance(executor, asyncpg.Connection) and outcome is not None:
        await budgets.check_settles_on_driver(conn, job.tenant_id, job.budget_period_start)
    cost: int | None = 0
    if outcome is not None and outcome.kind == CACHE_HIT:
        cost = await _settle_row(conn, await _hit_row(conn, job), outcome, job, bill_422=bill_422)
    elif outcome is not None and job.upstream_request_id is not None:
        row = await _request_row(conn, job, job.upstream_request_id)
        cost = await _settle_row(conn, row, outcome, job, bill_422=bill_422)
    if cost is None:
        return False
    await budgets.settle(
        executor,
        tenant_id=job.tenant_id,
        period_start=job.budget_period_start,
        reserved_micros=job.reserved_micros,
        cost_micros=cost,
    )
    return True


async def settle_request(
    session: AsyncSession,
    job: Job,
    request_id: str,
    outcome: Outcome,
    *,
    bill_422: bool,
) -> int | None:
    """Settle one request of a job that goes on (an attempt it fell back from): priced and
    charged to the budget period the job reserved in, its reservation kept for the next
    model. Returns its cost, or None when blocked (no price in force: it stays ``unpriced``
    until one exists and reconciliation settles it)."""
    conn = await driver_of(session)
    row = await _request_row(conn, job, request_id)
    if row["status"] == UsageStatus.settled.value:
        return int(row["cost_micros"] or 0)
    cost = await _settle_row(conn, row, outcome, job, bill_422=bill_422)
    if cost is not None:
        await budgets.settle(
            session,
            tenant_id=job.tenant_id,
            period_start=job.budget_period_start,
            reserved_micros=0,
            cost_micros=cost,
        )
    return cost


async def settle_orphan(
    session: AsyncSession, job: Job, request_id: str, outcome: Outcome, *, bill_422: bool
) -> None:
    """A request fal ran for this job that is not the job's own (a late webhook for an
    ambiguous submit that was retried): the tenant pays what fal billed for it too."""
    conn = await driver_of(session)
    row = await _request_row(conn, job, request_id, orphan=True)
    if row["status"] == UsageStatus.settled.value:
        return
    cost = await _settle_row(conn, row, outcome, job, bill_422=bill_422)
    if cost is not None:
        tenant = await session.get(Tenant, job.tenant_id)
        if tenant is not None:
            await budgets.charge(session, tenant, cost)


# A ledger row as its settlement reads it, row-locked: a request's, or a job's result-cache hit
# (which has no request: one row per job).
_ROW = """
    SELECT id, upstream_request_id, tenant_id, model, estimated_cost_micros, cost_micros,
        status, flagged, created_at
    FROM usage_records
"""
_LOCK_REQUEST_ROW = _ROW + "WHERE upstream_request_id = $1 FOR UPDATE"
_LOCK_HIT_ROW = _ROW + "WHERE job_id = $1 AND upstream_request_id IS NULL FOR UPDATE"


async def _request_row(
    conn: asyncpg.Connection, job: Job, request_id: str, *, orphan: bool = False
) -> asyncpg.Record:
    """The request's ledger row, locked; put on the ledger first when it is not (submitted
    before the ledger existed, attached late, or an orphan)."""
    row = await conn.fetchrow(_LOCK_REQUEST_ROW, request_id)
    if row is None:
        await record_request(conn, job, request_id, unit=unit_of(job), orphan=orphan)
        row = await conn.fetchrow(_LOCK_REQUEST_ROW, request_id)
        assert row is not None
    return row


_RECORD_CACHE_HIT = """
    INSERT INTO usage_records (id, upstream_request_id, tenant_id, job_id, model, endpoint, unit,
        estimated_cost_micros, status, orphan, flagged, created_at)
    VALUES ($1, NULL, $2, $3, $4, $5, $6, $7, 'estimated', false, false, $8)
    ON CONFLICT (job_id) WHERE upstream_request_id IS NULL DO NOTHING
"""


async def _hit_row(conn: asyncpg.Connection, job: Job) -> asyncpg.Record:
    """The job's hit on the ledger (once: unique per job), locked."""
    await conn.execute(
        _RECORD_CACHE_HIT,
        uuid.uuid4(),
        job.tenant_id,
        job.id,
        CACHE_HIT,
        job.endpoint,
        HIT_UNIT,
        job.estimated_cost_micros,
        utcnow(),
    )
    row = await conn.fetchrow(_LOCK_HIT_ROW, job.id)
    assert row is not None
    return row


async def _settle_row(
    conn: asyncpg.Connection, row: asyncpg.Record, outcome: Outcome, job: Job, *, bill_422: bool
) -> int | None:
    """Settle the locked ledger row ``row`` (its daily roll-up with it): its cost, or None
    when no price is in force (it is left ``unpriced``). A row settled already keeps its
    cost: nothing is written."""
    if row["status"] == UsageStatus.settled.value:
        return int(row["cost_micros"] or 0)
    values = await _pricing(conn, dict(row), outcome, job, bill_422=bill_422)
    columns = tuple(values)
    await conn.execute(
        _update_record_sql(columns), row["id"], *[_column(values[c]) for c in columns]
    )
    return int(values["cost_micros"]) if values["status"] is UsageStatus.settled else None


@functools.cache
def _update_record_sql(columns: tuple[str, ...]) -> str:
    """The UPDATE of a ledger row's settlement (among two sets of columns: built once each)."""
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(columns, start=2))
    return f"UPDATE usage_records SET {sets} WHERE id = $1"  # noqa: S608 (our columns)


def _column(value: object) -> object:
    return value.value if isinstance(value, enum.Enum) else value


async def _hit_of(session: AsyncSession, job_id: uuid.UUID) -> UsageRecord | None:
    stmt = select(UsageRecord).where(
        UsageRecord.job_id == job_id, UsageRecord.upstream_request_id.is_(None)
    )
    return (
        await session.scalars(stmt.with_for_update().execution_options(populate_existing=True))
    ).first()


async def _locked_record(session: AsyncSession, request_id: str) -> UsageRecord | None:
    stmt = select(UsageRecord).where(UsageRecord.upstream_request_id == request_id)
    return (
        await session.scalars(stmt.with_for_update().execution_options(populate_existing=True))
    ).first()


def unit_of(job: Job) -> str:
    spec = CATALOG.resolve(job.model)
    return spec.pricing.unit if spec else "video"


async def _pricing(
    executor: AsyncSession | asyncpg.Connection,
    record: dict[str, Any],
    outcome: Outcome,
    job: Job,
    *,
    bill_422: bool,
) -> dict[str, Any]:
    """What settling an unsettled ledger row writes on it, by the price in force when it was
    recorded, with its daily roll-up written: its columns' new values (``status`` settled, or
    unpriced when no price is in force). ``record``: the row's columns as read."""
    price = await price_at(executor, record["model"], record["created_at"])
    values: dict[str, Any] = {
        "outcome": outcome.kind,
        "job_status": job.status.value,
        "flagged": record["flagged"] or outcome.kind == "upstream_422",
    }
    if price is None:
        values["status"] = UsageStatus.unpriced
        UNPRICED.labels(model=record["model"]).inc()
        log.error(
            "no price in force: usage not settled",
            model=record["model"],
            fal_request_id=record["upstream_request_id"],
            job_id=str(job.id),
        )
        return values
    spec = CATALOG.resolve(record["model"])
    output = spec.output_quantity(job.upstream_payload or {}) if spec is not None else None
    units = billable_units(price.unit, outcome, bill_422=bill_422, output=output)
    if units is None:
        # A compute-second success without fal's inference time (or an output-second one
        # without its length): settle at the estimate rather than at $0, and flag it for
        # reconciliation.
        units = Decimal(0)
        values["cost_nanos"] = record["estimated_cost_micros"] * NANOS_PER_MICRO
        values["flagged"] = True
    else:
        values["cost_nanos"] = cost_nanos(units, price.unit_price_micros)
    values["cost_micros"] = nanos_to_micros(values["cost_nanos"])
    values["unit"] = price.unit
    values["units"] = units
    values["unit_price_micros"] = price.unit_price_micros
    values["price_id"] = price.id
    values["status"] = UsageStatus.settled
    values["settled_at"] = utcnow()
    await rollups.roll_up(
        executor,
        tenant_id=record["tenant_id"],
        model=record["model"],
        job_status=values["job_status"],
        unit=price.unit,
        units=units,
        cost_micros=values["cost_micros"],
        cost_nanos=values["cost_nanos"],
        settled_at=values["settled_at"],
    )
    SETTLED.labels(model=record["model"], outcome=outcome.kind).inc()
    return values


def unpriced_job_ids() -> Select[tuple[uuid.UUID]]:
    """Jobs whose own request waits for a price (their settlement is blocked)."""
    return select(UsageRecord.job_id).where(
        UsageRecord.status == UsageStatus.unpriced,
        UsageRecord.orphan.is_(False),
        UsageRecord.job_id.is_not(None),
    )


async def blocked_outcome(session: AsyncSession, job: Job) -> Outcome | None:
    """How the job's request ended, as recorded when its settlement was blocked."""
    if job.cache_source_id is not None:
        hit = await _hit_of(session, job.id)
        if hit is None or hit.status is not UsageStatus.unpriced:
            return None
        return Outcome(CACHE_HIT)
    if job.upstream_request_id is None:
        return None
    record = await _locked_record(session, job.upstream_request_id)
    if record is None or record.status is not UsageStatus.unpriced:
        return None
    return Outcome(record.outcome or "succeeded", job.inference_s)


async def settle_unpriced_orphans(session: AsyncSession, *, bill_422: bool) -> int:
    """Retry settlement of orphan requests blocked for want of a price (after a price was
    added). The jobs' own requests are settled by the jobs store (app.jobs.store)."""
    blocked = (
        await session.scalars(
            select(UsageRecord)
            .where(UsageRecord.status == UsageStatus.unpriced, UsageRecord.orphan.is_(True))
            .limit(500)
        )
    ).all()
    done = 0
    for record in blocked:
        job = await session.get(Job, record.job_id) if record.job_id else None
        if job is None or record.upstream_request_id is None:  # an orphan is always a request
            continue
        outcome = Outcome(record.outcome or "succeeded", job.inference_s)
        await settle_orphan(session, job, record.upstream_request_id, outcome, bill_422=bill_422)
        done += 1
    return done


async def prune(session: AsyncSession, retention: timedelta) -> int:
    """Drop settled ledger rows older than the retention; their daily rollups remain (the
    ledger's long-term total). Estimated and unpriced rows are never pruned."""
    cutoff = utcnow() - retention
    result = await session.execute(
        delete(UsageRecord).where(
            UsageRecord.status == UsageStatus.settled, UsageRecord.settled_at < cutoff
        )
    )
    return result.rowcount or 0
