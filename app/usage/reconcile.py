"""Compare the ledger with what fal says it billed (fal's platform API: per-request billing
events), and report every difference. `foley usage reconcile --from --to` prints the report.

The rules (docs/money.md):
- **Which requests a window holds.** A request belongs to the period fal billed it in (its
  billing event's time, its completion); one fal never billed (not yet, or at $0, or missing at
  fal) to the period the ledger recorded it in. So a request recorded before ``--from`` and
  billed after it is in the window, one recorded inside and billed after ``--to`` is in the next
  (events are fetched with some slack around the window to see them), and adjacent windows add
  up to the whole.
- **Exact.** Each request is compared at fal's precision (nano-dollars); the totals per tenant
  and endpoint, each the sum of its requests' nano-dollars rounded once, to the micro-dollar.
- **Orphans by tag.** A billed request the ledger lacks is attributed to the tenant and job its
  ``X-Fal-Tags`` name (``foley.tenant``, ``foley.job``; fal's events carry them where fal reports
  tags). With ``bill_orphans`` it is put on the ledger at fal's cost, once
  (``bill_reconciled``), unless its job is still live (the job may yet attach it).
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import CATALOG, ModelSpec
from app.kit.clock import utcnow
from app.kit.money import micros_to_usd, nanos_to_micros, nanos_to_usd
from app.models import Job, Tenant, UsageRecord, UsageStatus
from app.usage import budgets, ledger, rollups

PAGE = 1000
TENANT_TAG = "foley.tenant"
JOB_TAG = "foley.job"


@dataclass(frozen=True)
class Difference:
    kind: str  # missing_in_ledger | missing_at_fal | cost_mismatch | not_settled
    request_id: str
    model: str | None
    ledger_usd: str | None
    fal_usd: str | None
    tenant_id: str | None = None
    job_id: str | None = None


@dataclass
class Total:
    """One tenant's requests of one endpoint in the window (tenant None: fal billed them and
    nothing names a tenant)."""

    tenant_id: str | None
    endpoint: str
    ledger_requests: int = 0
    fal_requests: int = 0
    ledger_nanos: int = 0
    fal_nanos: int = 0

    @property
    def ok(self) -> bool:
        return nanos_to_micros(self.ledger_nanos) == nanos_to_micros(self.fal_nanos)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "endpoint": self.endpoint,
            "ledger_requests": self.ledger_requests,
            "fal_requests": self.fal_requests,
            "ledger_usd": micros_to_usd(nanos_to_micros(self.ledger_nanos)),
            "fal_usd": micros_to_usd(nanos_to_micros(self.fal_nanos)),
            "ledger_usd_exact": nanos_to_usd(self.ledger_nanos),
            "fal_usd_exact": nanos_to_usd(self.fal_nanos),
            "ok": self.ok,
        }


@dataclass(frozen=True)
class Billed:
    """An orphan fal billed that this run put on the ledger."""

    request_id: str
    tenant_id: str
    job_id: str | None
    endpoint: str
    usd_exact: str


@dataclass
class Report:
    start: datetime
    end: datetime
    ledger_requests: int = 0
    fal_requests: int = 0
    ledger_total_nanos: int = 0
    fal_total_nanos: int = 0
    differences: list[Difference] = field(default_factory=list)
    totals: list[Total] = field(default_factory=list)
    billed: list[Billed] = field(default_factory=list)

    @property
    def ledger_total_micros(self) -> int:
        return nanos_to_micros(self.ledger_total_nanos)

    @property
    def fal_total_micros(self) -> int:
        return nanos_to_micros(self.fal_total_nanos)

    @property
    def ok(self) -> bool:
        return (
            not self.differences
            and all(t.ok for t in self.totals)
            and self.ledger_total_micros == self.fal_total_micros
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "ledger_requests": self.ledger_requests,
            "fal_requests": self.fal_requests,
            "ledger_total_usd": micros_to_usd(self.ledger_total_micros),
            "fal_total_usd": micros_to_usd(self.fal_total_micros),
            "ledger_total_usd_exact": nanos_to_usd(self.ledger_total_nanos),
            "fal_total_usd_exact": nanos_to_usd(self.fal_total_nanos),
            "differences": [d.__dict__ for d in self.differences],
            "totals": [t.to_dict() for t in self.totals],
            "billed_orphans": [asdict(b) for b in self.billed],
        }


# fal stamps a request's completion, the ledger its submission: fal's events are read this much
# around the window reconciled.
SLACK = timedelta(hours=2)


def events_window(lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
    """[lo, hi) widened by SLACK for reading fal's events, within what a datetime holds (a
    window from year 1 is a client's to ask for)."""
    first, last = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    return (
        lo - SLACK if lo - first > SLACK else first,
        hi + SLACK if last - hi > SLACK else last,
    )


def _instant(value: str | None) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _nanos(event: dict[str, Any]) -> int:
    raw = Decimal(str(event.get("cost_estimate_nano_usd") or 0))
    return int(raw.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _ledger_nanos(record: UsageRecord) -> int:
    if record.cost_nanos is not None:
        return record.cost_nanos
    return (record.cost_micros or 0) * 1000


async def fetch_billing_events(
    http: httpx.AsyncClient, platform_url: str, key: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"start": start.isoformat(), "end": end.isoformat(), "limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        r = await http.get(
            f"{platform_url.rstrip('/')}/models/billing-events",
            params=params,
            headers={"Authorization": f"Key {key}"},
        )
        r.raise_for_status()
        body = r.json()
        events.extend(body.get("billing_events", []))
        cursor = body.get("next_cursor")
        if not body.get("has_more") or not cursor:
            return events


async def reconcile(
    session: AsyncSession,
    events: list[dict[str, Any]],
    start: datetime,
    end: datetime,
    *,
    bill_orphans: bool = False,
) -> Report:
    """The report of [start, end). ``events``: fal's billing events from somewhat before
    ``start`` to somewhat after ``end``. With ``bill_orphans`` the caller commits the session:
    the orphans it billed are on the ledger."""
    report = Report(start=start, end=end)
    by_id = {e["request_id"]: e for e in events}
    fal = {rid: e for rid, e in by_id.items() if start <= _instant(e.get("timestamp")) < end}
    recorded = (
        await session.scalars(
            select(UsageRecord).where(
                UsageRecord.created_at >= start,
                UsageRecord.created_at < end,
                # a result-cache hit sent nothing to fal: not fal's to bill
                UsageRecord.upstream_request_id.is_not(None),
            )
        )
    ).all()
    # Recorded in the window but billed in another period: that period's.
    ours: dict[str, UsageRecord] = {
        r.upstream_request_id: r
        for r in recorded
        if r.upstream_request_id is not None
        and (r.upstream_request_id in fal or r.upstream_request_id not in by_id)
    }
    earlier = [rid for rid in fal if rid not in ours]
    if earlier:  # billed in the window, recorded before it (or after: attached late)
        found = await session.scalars(
            select(UsageRecord).where(UsageRecord.upstream_request_id.in_(earlier))
        )
        ours.update({r.upstream_request_id: r for r in found.all() if r.upstream_request_id})
    totals: dict[tuple[str | None, str], Total] = {}

    def total(tenant_id: str | None, endpoint: str) -> Total:
        key = (tenant_id, endpoint)
        if key not in totals:
            totals[key] = Total(tenant_id, endpoint)
        return totals[key]

    for rid, e in fal.items():
        if rid in ours:
            continue
        tenant, job = await _tagged(session, e)
        if bill_orphans and tenant is not None and (job is None or job.status.terminal):
            billed = await bill_reconciled(
                session,
                request_id=rid,
                tenant=tenant,
                job=job,
                endpoint=str(e.get("endpoint_id")),
                units=Decimal(str(e.get("output_units") or 0)),
                cost_nanos=_nanos(e),
                billed_at=_instant(e.get("timestamp")),
            )
            row = await session.scalar(
                select(UsageRecord).where(UsageRecord.upstream_request_id == rid)
            )
            if row is not None:
                ours[rid] = row
                if billed:
                    report.billed.append(
                        Billed(
                            rid,
                            str(tenant.id),
                            None if job is None else str(job.id),
                            row.endpoint,
                            nanos_to_usd(_nanos(e)) or "0",
                        )
                    )
                continue
        fal_nanos = _nanos(e)
        t = total(None if tenant is None else str(tenant.id), str(e.get("endpoint_id")))
        t.fal_requests += 1
        t.fal_nanos += fal_nanos
        report.fal_total_nanos += fal_nanos
        if fal_nanos:
            report.differences.append(
                Difference(
                    "missing_in_ledger",
                    rid,
                    e.get("endpoint_id"),
                    None,
                    nanos_to_usd(fal_nanos),
                    None if tenant is None else str(tenant.id),
                    None if job is None else str(job.id),
                )
            )
    for rid, r in ours.items():
        nanos = _ledger_nanos(r)
        t = total(str(r.tenant_id), r.endpoint)
        t.ledger_requests += 1
        t.ledger_nanos += nanos
        report.ledger_total_nanos += nanos
        job_id = None if r.job_id is None else str(r.job_id)
        e = fal.get(rid)
        if e is None:
            if nanos > 0:
                report.differences.append(
                    Difference(
                        "missing_at_fal",
                        rid,
                        r.model,
                        nanos_to_usd(nanos),
                        None,
                        str(r.tenant_id),
                        job_id,
                    )
                )
            continue
        fal_nanos = _nanos(e)
        t.fal_requests += 1
        t.fal_nanos += fal_nanos
        report.fal_total_nanos += fal_nanos
        if r.status is not UsageStatus.settled:
            report.differences.append(
                Difference(
                    "not_settled",
                    rid,
                    r.model,
                    None,
                    nanos_to_usd(fal_nanos),
                    str(r.tenant_id),
                    job_id,
                )
            )
        elif nanos != fal_nanos:
            report.differences.append(
                Difference(
                    "cost_mismatch",
                    rid,
                    r.model,
                    nanos_to_usd(nanos),
                    nanos_to_usd(fal_nanos),
                    str(r.tenant_id),
                    job_id,
                )
            )
    report.ledger_requests = len(ours)
    report.fal_requests = len(fal)
    report.totals = sorted(totals.values(), key=lambda t: (t.tenant_id or "", t.endpoint))
    return report


async def _tagged(session: AsyncSession, event: dict[str, Any]) -> tuple[Tenant | None, Job | None]:
    """The tenant and job a billed request's tags name, when they exist (and the job is the
    tenant's): what fal billed is theirs."""
    tags = event.get("tags")
    if not isinstance(tags, dict):
        return None, None
    tenant_id, job_id = _uuid(tags.get(TENANT_TAG)), _uuid(tags.get(JOB_TAG))
    if tenant_id is None:
        return None, None
    tenant = await session.get(Tenant, tenant_id)
    if tenant is None:
        return None, None
    job = None if job_id is None else await session.get(Job, job_id)
    if job is not None and job.tenant_id != tenant.id:
        job = None
    return tenant, job


def _uuid(value: Any) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value else None
    except ValueError:
        return None


# --- a request only fal's bill told the ledger of ----------------------------------------------


async def bill_reconciled(
    session: AsyncSession,
    *,
    request_id: str,
    tenant: Tenant,
    job: Job | None,
    endpoint: str,
    units: Decimal,
    cost_nanos: int,
    billed_at: datetime,
) -> bool:
    """A request fal billed that the ledger never had (its submit's answer and its webhook were
    lost, and the lookup could not decide), found by reconcile through the tenant and job it was
    tagged with: put on the ledger at what fal billed, settled, charged to the tenant's budget
    and rolled up — once. False when the ledger has it already (a second run, or its job's late
    webhook got there first): nothing is written.

    It is the job's own usage when the job recorded no request of its own, else an orphan; it is
    always flagged (fal's numbers, not the gateway's rules, priced it)."""
    spec = CATALOG.resolve(job.model if job is not None else endpoint) or _by_endpoint(endpoint)
    cost = nanos_to_micros(cost_nanos)
    own = job is not None and job.upstream_request_id is None and not await _has_own(session, job)
    inserted = await session.scalar(
        insert(UsageRecord)
        .values(
            id=uuid.uuid4(),
            upstream_request_id=request_id,
            tenant_id=tenant.id,
            job_id=None if job is None else job.id,
            model=job.model if job is not None else (spec.id if spec else endpoint),
            endpoint=endpoint,
            unit=spec.pricing.unit if spec else "unknown",
            units=units,
            estimated_cost_micros=0,
            cost_micros=cost,
            cost_nanos=cost_nanos,
            status=UsageStatus.settled,
            outcome=RECONCILED,
            flagged=True,
            orphan=not own,
            job_status=None if job is None else job.status.value,
            created_at=billed_at,
            settled_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[UsageRecord.upstream_request_id])
        .returning(UsageRecord.id)
    )
    if inserted is None:
        return False
    record = await session.get(UsageRecord, inserted)
    assert record is not None and record.settled_at is not None
    await rollups.roll_up(
        session,
        tenant_id=record.tenant_id,
        model=record.model,
        job_status=record.job_status,
        unit=record.unit,
        units=record.units,
        cost_micros=cost,
        cost_nanos=cost_nanos,
        settled_at=record.settled_at,
    )
    await budgets.charge(session, tenant, cost)
    ledger.SETTLED.labels(model=record.model, outcome=RECONCILED).inc()
    return True


# The outcome of a request only fal's bill told the ledger of (see bill_reconciled).
RECONCILED = "billed_by_fal"


async def _has_own(session: AsyncSession, job: Job) -> bool:
    stmt = select(UsageRecord.id).where(UsageRecord.job_id == job.id, UsageRecord.orphan.is_(False))
    return (await session.scalar(stmt.limit(1))) is not None


def _by_endpoint(endpoint: str) -> ModelSpec | None:
    return next((spec for spec in CATALOG if spec.endpoint == endpoint), None)
