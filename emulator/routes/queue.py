"""fal's queue API: submit on the full model id; status, stream, result, cancel on `owner/app`.

Handlers read `request.path_params` directly: this is the benchmarked hot path, and FastAPI's
parameter machinery costs more than the work itself.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse

from emulator.catalog import APPS, MODELS, ModelSpec
from emulator.errors import dumps, schema_error_detail
from emulator.faults import chance, nginx_body, pick, rng_for
from emulator.queue import Job, Status
from emulator.requestlog import DROP_KEY
from emulator.routes.common import emu_of, json_response, note
from emulator.state import Emulator

router = APIRouter()

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_UNAUTHORIZED = {"detail": "Missing or invalid credentials: use 'Authorization: Key <FAL_KEY>'"}
_LOCKED = {
    "detail": "User is locked. Reason: Exhausted balance. Top up your balance at "
    "https://fal.ai/dashboard/billing."
}


def _flag(value: str | None) -> bool | None:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _bad_logs(value: str) -> Response:
    return json_response(
        422,
        {
            "detail": [
                {
                    "type": "bool_parsing",
                    "loc": ["query", "logs"],
                    "msg": "Input should be a valid boolean, unable to interpret input",
                    "input": value,
                }
            ]
        },
    )


def _lookup(emu: Emulator, request: Request) -> tuple[Job | None, str]:
    params = request.path_params
    request_id = params["request_id"]
    job = emu.engine.get(request_id)
    if job is not None and job.spec.app_path != f"{params['owner']}/{params['app']}":
        job = None
    note(request, request_id=request_id, model=job.endpoint_id if job else None)
    return job, request_id


def _start_timeout(request: Request) -> float | None | str:
    raw = request.headers.get("x-fal-request-start-timeout") or request.headers.get(
        "x-fal-request-timeout"
    )
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return raw
    return value if value > 0 else raw


@router.get("/{owner}/{app}/requests/{request_id}/status", include_in_schema=False)
async def status(request: Request) -> Response:
    emu = emu_of(request)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED)
    job, request_id = _lookup(emu, request)
    if job is None:
        return json_response(404, {"detail": "Request not found"}, request_id=request_id)
    raw = request.query_params.get("logs")
    with_logs = _flag(raw)
    if with_logs is None:
        return _bad_logs(raw or "")
    body = emu.engine.status_body(job, with_logs)
    code = 200 if job.status is Status.COMPLETED else 202
    return json_response(code, body, request_id=request_id)


@router.get("/{owner}/{app}/requests/{request_id}/status/stream", include_in_schema=False)
async def status_stream(request: Request) -> Response:
    emu = emu_of(request)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED)
    job, request_id = _lookup(emu, request)
    if job is None:
        return json_response(404, {"detail": "Request not found"}, request_id=request_id)
    raw = request.query_params.get("logs")
    with_logs = _flag(raw)
    if with_logs is None:
        return _bad_logs(raw or "")

    async def events() -> AsyncIterator[bytes]:
        last = b""
        while emu.engine.get(request_id) is job:
            waiter = job.waiter()  # taken before the snapshot: no change can slip between
            snapshot = dumps(emu.engine.status_body(job, with_logs))
            if snapshot != last:
                yield b"data: " + snapshot + b"\n\n"
                last = snapshot
            if job.status is Status.COMPLETED:
                return
            try:
                await asyncio.wait_for(waiter.wait(), timeout=emu.knobs.sse_keepalive_s)
            except TimeoutError:
                yield b": keep-alive\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={
            "x-fal-request-id": request_id,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )


@router.get("/{owner}/{app}/requests/{request_id}", include_in_schema=False)
async def result(request: Request) -> Response:
    emu = emu_of(request)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED)
    job, request_id = _lookup(emu, request)
    if job is None:
        return json_response(404, {"detail": "Request not found"}, request_id=request_id)
    outcome = job.outcome
    if job.status is not Status.COMPLETED or outcome is None:
        where = "in queue" if job.status is Status.IN_QUEUE else "in progress"
        return json_response(400, {"detail": f"Request is still {where}"}, request_id=request_id)
    return json_response(
        outcome.status_code, outcome.body, request_id=request_id, headers=outcome.headers
    )


@router.put("/{owner}/{app}/requests/{request_id}/cancel", include_in_schema=False)
async def cancel(request: Request) -> Response:
    emu = emu_of(request)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED)
    job, request_id = _lookup(emu, request)
    if job is None:
        return json_response(404, {"status": "NOT_FOUND"}, request_id=request_id)
    if emu.engine.cancel(job):
        return json_response(202, {"status": "CANCELLATION_REQUESTED"}, request_id=request_id)
    return json_response(400, {"status": "ALREADY_COMPLETED"}, request_id=request_id)


async def submit(request: Request, spec: ModelSpec) -> Response:
    emu = emu_of(request)
    knobs = emu.knobs
    seq = emu.next_seq()
    rng = rng_for(emu.seed, seq)
    note(request, model=spec.endpoint_id)

    code = pick(knobs.ingress_error_rates, rng)
    if code is not None:  # nginx answered: fal never saw the request (no x-fal-request-id)
        note(request, outcome="ingress_error")
        headers = {"Server": "nginx"}
        if code == 429:
            headers["Retry-After"] = "1"
        return Response(nginx_body(code), code, media_type="text/html", headers=headers)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED)
    if knobs.account_locked:
        return json_response(403, _LOCKED)

    raw_body = await request.body()
    try:
        payload = json.loads(raw_body) if raw_body else {}
    except ValueError as exc:
        detail = [
            {
                "type": "json_invalid",
                "loc": ["body", getattr(exc, "pos", 0)],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": getattr(exc, "msg", str(exc))},
            }
        ]
        return json_response(422, {"detail": detail})
    inp = None
    if knobs.validate_at_submit:
        try:
            inp = spec.input_schema.model_validate(payload)
        except ValidationError as exc:
            note(request, outcome="rejected")
            return json_response(422, {"detail": schema_error_detail(exc)})

    start_timeout = _start_timeout(request)
    if isinstance(start_timeout, str):
        return json_response(400, {"detail": f"Invalid request timeout: {start_timeout!r}"})
    query = request.query_params if request.scope["query_string"] else None
    webhook_url = query.get("fal_webhook") if query is not None else None
    headers = request.headers
    fal_headers = {k: v for k, v in headers.items() if k.startswith("x-fal-")}

    request_id = str(uuid.uuid4())
    response_url = f"{emu.base_url}/{spec.app_path}/requests/{request_id}"
    drop = chance(knobs.ambiguous_submit_rate, rng)
    job = Job(
        request_id=request_id,
        spec=spec,
        raw_input=payload,
        input=inp,
        seq=seq,
        rng=rng,
        webhook_url=webhook_url or None,
        low_priority=headers.get("x-fal-queue-priority") == "low",
        fal_headers=fal_headers,
        response_url=response_url,
    )
    position = emu.engine.submit(job, start_timeout)
    note(request, request_id=request_id)
    if drop:
        request.scope[DROP_KEY] = knobs.ambiguous_submit_hold_s
    return json_response(
        200,
        {
            "status": "IN_QUEUE",
            "request_id": request_id,
            "gateway_request_id": request_id,
            "response_url": response_url,
            "status_url": f"{response_url}/status",
            "cancel_url": f"{response_url}/cancel",
            "queue_position": position,
        },
        request_id=request_id,
    )


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"],
    include_in_schema=False,
)
async def submit_or_reject(request: Request) -> Response:
    """POST on a model id submits. Anything else under a known app is fal's 405: notably the
    status/result/cancel URL built with the FULL model id instead of `owner/app`."""
    path = request.path_params["path"].strip("/")
    spec = MODELS.get(path)
    if spec is not None and request.method == "POST":
        return await submit(request, spec)
    parts = path.split("/")
    if len(parts) >= 2 and f"{parts[0]}/{parts[1]}" in APPS:
        if spec is not None or "requests" in parts or request.method != "POST":
            return json_response(405, {"detail": "Method Not Allowed"})
    return json_response(404, {"detail": "Not Found"})
