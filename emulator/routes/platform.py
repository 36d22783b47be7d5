"""fal's platform API (admin key): pricing, aggregated usage and per-request billing events."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from emulator.billing import PlatformQueryError, split_ids
from emulator.routes.common import emu_of, json_response

router = APIRouter(prefix="/v1/models")


def _denied(request: Request) -> Response | None:
    emu = emu_of(request)
    authorization = request.headers.get("authorization")
    if emu.admin_ok(authorization, bearer=False):
        return None
    if emu.key_ok(authorization):
        return json_response(403, {"detail": "Admin API key required"}, fal=False)
    return json_response(401, {"detail": "Unauthorized"}, fal=False)


@router.get("/pricing", include_in_schema=False)
async def pricing(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    ids = split_ids(request.query_params.getlist("endpoint_id"))
    return json_response(200, emu_of(request).ledger.pricing(ids), fal=False)


@router.get("/usage", include_in_schema=False)
async def usage(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    query = request.query_params
    try:
        body = emu_of(request).ledger.usage(
            endpoint_ids=split_ids(query.getlist("endpoint_id")),
            start=query.get("start"),
            end=query.get("end"),
            timeframe=query.get("timeframe"),
            expand=split_ids(query.getlist("expand")),
            bound_to_timeframe=query.get("bound_to_timeframe", "true").lower() != "false",
        )
    except PlatformQueryError as exc:
        return json_response(400, {"detail": str(exc)}, fal=False)
    return json_response(200, body, fal=False)


@router.get("/billing-events", include_in_schema=False)
async def billing_events(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    query = request.query_params
    try:
        limit = int(query.get("limit", "100"))
        if limit < 1:
            raise PlatformQueryError("limit must be >= 1")
        body = emu_of(request).ledger.billing_events(
            endpoint_ids=split_ids(query.getlist("endpoint_id")),
            request_ids=split_ids(query.getlist("request_id")),
            start=query.get("start"),
            end=query.get("end"),
            limit=min(limit, 10_000),
            cursor=query.get("cursor"),
            source=query.get("source"),
            tags=query.getlist("tag"),
            tag_reporting=emu_of(request).knobs.tag_reporting,
        )
    except (PlatformQueryError, ValueError) as exc:
        return json_response(400, {"detail": str(exc)}, fal=False)
    return json_response(200, body, fal=False)
