from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from app.auth.dependencies import AdminActor, AdminDep, CurrentTenant
from app.db.session import SessionDep
from app.kit.money import micros_to_usd, usd_to_micros
from app.kit.pagination import ListPage
from app.kit.problems import InputValidationError, ProblemError, problems
from app.usage import prices, reconcile, service
from app.usage.export import export_csv
from app.usage.schemas import PriceIn, PriceModel, PriceOut, UsageSummary
from app.usage.service import GroupBy

router = APIRouter(prefix="/v1/usage", tags=["usage"])
admin_router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminDep])

From = Annotated[date | None, Query(alias="from", description="First day (UTC), inclusive.")]
To = Annotated[date | None, Query(alias="to", description="Last day (UTC), exclusive.")]


@router.get("", response_model=UsageSummary, response_model_exclude_unset=True)
async def usage_summary(
    tenant: CurrentTenant,
    session: SessionDep,
    start: From = None,
    end: To = None,
    group_by: GroupBy = "day",
) -> dict[str, Any]:
    """Your usage: jobs (by final status), units and cost, per day, month or model."""
    lo, hi = service.default_range(start, end)
    return await service.summary(session, start=lo, end=hi, group_by=group_by, tenant_id=tenant.id)


def _csv(rows, filename: str) -> StreamingResponse:  # type: ignore[no-untyped-def]
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/export.csv", response_class=StreamingResponse)
async def usage_export(
    request: Request, tenant: CurrentTenant, start: From = None, end: To = None
) -> StreamingResponse:
    """Every billable request in the range, one CSV row each."""
    lo, hi = service.default_range(start, end)
    return _csv(
        export_csv(request.app.state.driver_pool, start=lo, end=hi, tenant_id=tenant.id),
        f"foley-usage-{lo}-{hi}.csv",
    )


@admin_router.get("/usage", response_model=UsageSummary, response_model_exclude_unset=True)
async def admin_usage(
    session: SessionDep,
    start: From = None,
    end: To = None,
    group_by: GroupBy = "day",
    tenant: Annotated[uuid.UUID | None, Query(description="One tenant only.")] = None,
) -> dict[str, Any]:
    """Usage across tenants, each group split by tenant."""
    lo, hi = service.default_range(start, end)
    return await service.summary(
        session, start=lo, end=hi, group_by=group_by, tenant_id=tenant, by_tenant=True
    )


@admin_router.get("/usage/export.csv", response_class=StreamingResponse)
async def admin_usage_export(
    request: Request,
    start: From = None,
    end: To = None,
    tenant: Annotated[uuid.UUID | None, Query()] = None,
) -> StreamingResponse:
    lo, hi = service.default_range(start, end)
    return _csv(
        export_csv(request.app.state.driver_pool, start=lo, end=hi, tenant_id=tenant),
        f"foley-usage-all-{lo}-{hi}.csv",
    )


def _price_out(p) -> PriceOut:  # type: ignore[no-untyped-def]
    return PriceOut(
        id=p.id,
        model=p.model,
        unit=p.unit,
        unit_price_usd=micros_to_usd(p.unit_price_micros) or "0",
        effective_from=p.effective_from,
    )


@admin_router.get("/prices", response_model=ListPage[PriceOut])
async def list_prices(
    session: SessionDep,
    model: Annotated[
        PriceModel | None,  # type: ignore[valid-type]
        Query(description="One model's prices, by id or alias."),
    ] = None,
) -> ListPage[PriceOut]:
    return ListPage[PriceOut](
        data=[_price_out(p) for p in await prices.list_prices(session, model)], has_more=False
    )


@admin_router.post(
    "/prices",
    response_model=PriceOut,
    status_code=201,
    responses=problems(s409="The model already has a price from that moment."),
)
async def add_price(body: PriceIn, session: SessionDep, actor: AdminActor) -> PriceOut:
    """A new price from `effective_from` on (prices are never edited in place)."""
    try:
        micros = usd_to_micros(body.unit_price_usd)
    except ValueError as exc:
        raise InputValidationError(
            [{"param": "unit_price_usd", "code": "invalid_amount", "message": str(exc)}]
        ) from exc
    price = await prices.add_price(
        session,
        model=body.model,
        unit=body.unit,
        unit_price_micros=micros,
        effective_from=body.effective_from,
        actor=actor,
    )
    return _price_out(price)


class ReconcileUnavailable(ProblemError):
    status = 503
    code = "reconcile_unavailable"


@admin_router.get(
    "/reconcile",
    responses=problems(s503="No fal admin key (FOLEY_FAL_ADMIN_KEY or FAL_KEY), or fal failed."),
)
async def reconcile_report(
    request: Request, session: SessionDep, start: From = None, end: To = None
) -> dict[str, Any]:
    """The ledger against fal's billing events over [from, to) (default: this month), as
    `foley usage reconcile --json` reports it. Read-only: orphans are billed by the CLI's
    `--bill-orphans` alone."""
    settings = request.app.state.settings
    key = settings.fal_admin_key or settings.fal_key
    if key is None:
        raise ReconcileUnavailable("Set FOLEY_FAL_ADMIN_KEY (or FAL_KEY) to read fal's billing.")
    lo_day, hi_day = service.default_range(start, end)
    lo = datetime.combine(lo_day, time(), UTC)
    hi = datetime.combine(hi_day, time(), UTC)
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            events = await reconcile.fetch_billing_events(
                http,
                settings.fal_platform_url,
                key.get_secret_value(),
                *reconcile.events_window(lo, hi),
            )
    except httpx.HTTPError as exc:
        raise ReconcileUnavailable(f"fal's billing events could not be read: {exc}") from exc
    report = await reconcile.reconcile(session, events, lo, hi)
    return {"object": "reconcile_report", "ok": report.ok, **report.to_dict()}
