"""fal's platform API (admin key): pricing, aggregated usage, per-request billing events and the
request history of an endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import QueryParams
from starlette.responses import Response

from emulator.billing import PlatformQueryError, split_ids
from emulator.history import DEFAULT_LIMIT, MAX_LIMIT
from emulator.routes.common import emu_of, json_response
from emulator.state import Emulator

router = APIRouter(prefix="/v1/models")


def _denied(request: Request) -> Response | None:
    emu = emu_of(request)
    authorization = request.headers.get("authorization")
    if emu.admin_ok(authorization, bearer=False):
        return None
    if emu.key_ok(authorization):
        return json_response(403, {"detail": "Admin API key required"}, fal=False)
    return json_response(401, {"detail": "Unauthorized"}, fal=False)


def _answer(request: Request, compute: Callable[[Emulator, QueryParams], Any]) -> Response:
    """The admin-key check, then `compute`'s answer; a bad query parameter is a 400."""
    if (denied := _denied(request)) is not None:
        return denied
    try:
        body = compute(emu_of(request), request.query_params)
    except PlatformQueryError as exc:
        return json_response(400, {"detail": str(exc)}, fal=False)
    return json_response(200, body, fal=False)


def _limit(raw: str | None, default: int, most: int, *, strict: bool = False) -> int:
    """`limit` from 1 to `most`; above it: capped, or a 400 when `strict`."""
    try:
        limit = int(raw) if raw is not None else default
    except ValueError as exc:
        raise PlatformQueryError(f"limit must be an integer, got {raw!r}") from exc
    if limit < 1 or (strict and limit > most):
        raise PlatformQueryError(f"limit must be from 1 to {most}, got {limit}")
    return min(limit, most)


@router.get("/pricing", include_in_schema=False)
async def pricing(request: Request) -> Response:
    return _answer(
        request, lambda emu, query: emu.ledger.pricing(split_ids(query.getlist("endpoint_id")))
    )


@router.get("/usage", include_in_schema=False)
async def usage(request: Request) -> Response:
    return _answer(
        request,
        lambda emu, query: emu.ledger.usage(
            endpoint_ids=split_ids(query.getlist("endpoint_id")),
            start=query.get("start"),
            end=query.get("end"),
            timeframe=query.get("timeframe"),
            expand=split_ids(query.getlist("expand")),
            bound_to_timeframe=query.get("bound_to_timeframe", "true").lower() != "false",
        ),
    )


@router.get("/billing-events", include_in_schema=False)
async def billing_events(request: Request) -> Response:
    return _answer(
        request,
        lambda emu, query: emu.ledger.billing_events(
            endpoint_ids=split_ids(query.getlist("endpoint_id")),
            request_ids=split_ids(query.getlist("request_id")),
            start=query.get("start"),
            end=query.get("end"),
            limit=_limit(query.get("limit"), 100, 10_000),
            cursor=query.get("cursor"),
            source=query.get("source"),
            tags=query.getlist("tag"),
            tag_reporting=emu.knobs.tag_reporting,
        ),
    )


@router.get("/requests/by-endpoint", include_in_schema=False)
async def requests_by_endpoint(request: Request) -> Response:
    return _answer(
        request,
        lambda emu, query: emu.engine.history.by_endpoint(
            endpoint_id=query.get("endpoint_id"),
            request_id=query.get("request_id") or None,
            start=query.get("start"),
            end=query.get("end"),
            limit=_limit(query.get("limit"), DEFAULT_LIMIT, MAX_LIMIT, strict=True),
            cursor=query.get("cursor"),
            expand=split_ids(query.getlist("expand")),
        ),
    )
