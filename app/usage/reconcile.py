"""Compare the ledger with what fal says it billed (fal's platform API: per-request billing
events), and report every difference. `foley usage reconcile --from --to` prints the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.kit.money import micros_to_usd
from app.models import UsageRecord, UsageStatus

PAGE = 1000


@dataclass(frozen=True)
class Difference:
    kind: str  # missing_in_ledger | missing_at_fal | cost_mismatch | not_settled
    request_id: str
    model: str | None
    ledger_usd: str | None
    fal_usd: str | None
    tenant_id: str | None = None


@dataclass
class Report:
    start: datetime
    end: datetime
    ledger_requests: int = 0
    fal_requests: int = 0
    ledger_total_micros: int = 0
    fal_total_micros: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "ledger_requests": self.ledger_requests,
            "fal_requests": self.fal_requests,
            "ledger_total_usd": micros_to_usd(self.ledger_total_micros),
            "fal_total_usd": micros_to_usd(self.fal_total_micros),
            "differences": [d.__dict__ for d in self.differences],
        }


def _instant(value: str | None) -> datetime:
    if not value:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _nano_to_micros(nano: int | float) -> int:
    return int((Decimal(str(nano)) / 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


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
    session: AsyncSession, events: list[dict[str, Any]], start: datetime, end: datetime
) -> Report:
    report = Report(start=start, end=end)
    rows = (
        await session.scalars(
            select(UsageRecord).where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
        )
    ).all()
    ours = {r.upstream_request_id: r for r in rows}
    # A request we recorded just before the window whose billing event fal stamped inside it (we
    # record at submit, fal at completion) is the same request, not one missing from the ledger.
    edge = [
        e["request_id"]
        for e in events
        if e["request_id"] not in ours and start <= _instant(e.get("timestamp")) < end
    ]
    if edge:
        earlier = await session.scalars(
            select(UsageRecord).where(UsageRecord.upstream_request_id.in_(edge))
        )
        ours.update({r.upstream_request_id: r for r in earlier.all()})
    report.ledger_requests = len(ours)
    # fal stamps a request when it completes, we when we submit it: match on the request id,
    # and take fal's other events by their own time.
    fal = {
        e["request_id"]: e
        for e in events
        if e["request_id"] in ours or start <= _instant(e.get("timestamp")) < end
    }
    report.fal_requests = len(fal)
    for rid, e in fal.items():
        fal_micros = _nano_to_micros(e.get("cost_estimate_nano_usd") or 0)
        report.fal_total_micros += fal_micros
        r = ours.get(rid)
        if r is None:
            if fal_micros:
                report.differences.append(
                    Difference(
                        "missing_in_ledger",
                        rid,
                        e.get("endpoint_id"),
                        None,
                        micros_to_usd(fal_micros),
                    )
                )
            continue
        if r.status is not UsageStatus.settled:
            report.differences.append(
                Difference(
                    "not_settled", rid, r.model, None, micros_to_usd(fal_micros), str(r.tenant_id)
                )
            )
        elif (r.cost_micros or 0) != fal_micros:
            report.differences.append(
                Difference(
                    "cost_mismatch",
                    rid,
                    r.model,
                    micros_to_usd(r.cost_micros),
                    micros_to_usd(fal_micros),
                    str(r.tenant_id),
                )
            )
    for rid, r in ours.items():
        report.ledger_total_micros += r.cost_micros or 0
        if rid not in fal and (r.cost_micros or 0) > 0:
            report.differences.append(
                Difference(
                    "missing_at_fal",
                    rid,
                    r.model,
                    micros_to_usd(r.cost_micros),
                    None,
                    str(r.tenant_id),
                )
            )
    return report
