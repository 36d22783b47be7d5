"""fal's queue API: submit on the full model id; status, stream, result, cancel on `owner/app`.

Submit, status, result and cancel are the benchmarked hot path, so they are served as plain
ASGI by `dispatch()` (called from the front middleware) instead of through FastAPI's router,
whose per-request matching costs several times the work itself. The SSE stream and the 404/405
answers for every other path stay ordinary FastAPI routes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from emulator.catalog import APPS, MODELS, ModelSpec
from emulator.errors import dumps, schema_error_detail
from emulator.faults import chance, nginx_body, pick, rng_for
from emulator.queue import Job, Status
from emulator.requestlog import DROP_KEY
from emulator.routes.common import emu_of, json_response, note
from emulator.state import Emulator
from emulator.tags import HEADER as TAGS_HEADER
from emulator.tags import parse_tags

router = APIRouter()

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_UNAUTHORIZED = dumps(
    {"detail": "Missing or invalid credentials: use 'Authorization: Key <FAL_KEY>'"}
)
_LOCKED = dumps(
    {
        "detail": "User is locked. Reason: Exhausted balance. Top up your balance at "
        "https://fal.ai/dashboard/billing."
    }
)
_NOT_FOUND = dumps({"detail": "Request not found"})
_CANCEL_NOT_FOUND = dumps({"status": "NOT_FOUND"})
_CANCEL_REQUESTED = dumps({"status": "CANCELLATION_REQUESTED"})
_ALREADY_COMPLETED = dumps({"status": "ALREADY_COMPLETED"})
_JSON = (b"content-type", b"application/json")

Headers = list[tuple[bytes, bytes]]


class Reply:
    __slots__ = ("body", "headers", "status")

    def __init__(
        self, status: int, body: bytes, request_id: str | None, extra: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.body = body
        headers: Headers = [_JSON, (b"content-length", str(len(body)).encode())]
        # Every answer of fal's queue carries x-fal-request-id (ingress errors do not).
        headers.append((b"x-fal-request-id", (request_id or str(uuid.uuid4())).encode()))
        if extra:
            headers.extend((k.lower().encode(), v.encode()) for k, v in extra.items())
        self.headers = headers


async def _send(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
    await send({"type": "http.response.body", "body": reply.body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _flag(value: str | None) -> bool | None:
    if value is None:
        return False
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _query(scope: Scope) -> dict[str, list[str]]:
    raw = scope["query_string"]
    return parse_qs(raw.decode("latin-1"), keep_blank_values=True) if raw else {}


def _bad_logs(value: str) -> Reply:
    detail = {
        "type": "bool_parsing",
        "loc": ["query", "logs"],
        "msg": "Input should be a valid boolean, unable to interpret input",
        "input": value,
    }
    return Reply(422, dumps({"detail": [detail]}), None)


def _start_timeout(headers: dict[bytes, bytes]) -> float | str | None:
    raw = headers.get(b"x-fal-request-start-timeout") or headers.get(b"x-fal-request-timeout")
    if raw is None:
        return None
    text = raw.decode("latin-1")
    try:
        value = float(text)
    except ValueError:
        return text
    return value if value > 0 else text


# --- the operations --------------------------------------------------------------------------
def submit(
    emu: Emulator, spec: ModelSpec, scope: Scope, headers: dict[bytes, bytes], body: bytes
) -> Reply:
    knobs = emu.knobs
    seq = emu.next_seq()
    rng = rng_for(emu.seed, seq)
    entry = scope.get("emulator.entry")
    if entry is not None:
        entry["model"] = spec.endpoint_id

    code = pick(knobs.ingress_error_rates, rng)
    if code is not None:  # nginx answered: fal never saw the request (no x-fal-request-id)
        if entry is not None:
            entry["outcome"] = "ingress_error"
        page = nginx_body(code)
        reply = Reply(code, page, None)
        reply.headers = [
            (b"content-type", b"text/html"),
            (b"content-length", str(len(page)).encode()),
            (b"server", b"nginx"),
        ]
        if code == 429:
            reply.headers.append((b"retry-after", b"1"))
        return reply
    if not emu.key_ok(_text(headers.get(b"authorization"))):
        return Reply(401, _UNAUTHORIZED, None)
    if knobs.account_locked:
        return Reply(403, _LOCKED, None)

    try:
        payload = json.loads(body) if body else {}
    except ValueError as exc:
        detail = {
            "type": "json_invalid",
            "loc": ["body", getattr(exc, "pos", 0)],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": getattr(exc, "msg", str(exc))},
        }
        return Reply(422, dumps({"detail": [detail]}), None)
    inp = None
    if knobs.validate_at_submit:
        try:
            inp = spec.input_schema.model_validate(payload)
        except ValidationError as exc:
            if entry is not None:
                entry["outcome"] = "rejected"
            return Reply(422, dumps({"detail": schema_error_detail(exc)}), None)

    start_timeout = _start_timeout(headers)
    if isinstance(start_timeout, str):
        return Reply(400, dumps({"detail": f"Invalid request timeout: {start_timeout!r}"}), None)
    webhook_url = _query(scope).get("fal_webhook", [""])[0] or None

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
        webhook_url=webhook_url,
        low_priority=headers.get(b"x-fal-queue-priority") == b"low",
        fal_headers={
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in headers.items()
            if k.startswith(b"x-fal-")
        },
        response_url=response_url,
        tags=parse_tags(headers.get(TAGS_HEADER)),
    )
    position = emu.engine.submit(job, start_timeout)
    if entry is not None:
        entry["request_id"] = request_id
        entry["tags"] = job.tags
    if drop:
        scope[DROP_KEY] = knobs.ambiguous_submit_hold_s
    answer = {
        "status": "IN_QUEUE",
        "request_id": request_id,
        "gateway_request_id": request_id,
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
        "queue_position": position,
    }
    return Reply(200, dumps(answer), request_id)


def _find(emu: Emulator, scope: Scope, app_path: str, request_id: str) -> Job | None:
    job = emu.engine.get(request_id)
    if job is not None and job.spec.app_path != app_path:
        job = None
    entry = scope.get("emulator.entry")
    if entry is not None:
        entry["request_id"] = request_id
        entry["model"] = job.endpoint_id if job else None
    return job


def status(emu: Emulator, scope: Scope, app_path: str, request_id: str) -> Reply:
    job = _find(emu, scope, app_path, request_id)
    if job is None:
        return Reply(404, _NOT_FOUND, request_id)
    raw = _query(scope).get("logs", [None])[0]
    with_logs = _flag(raw)
    if with_logs is None:
        return _bad_logs(raw or "")
    code = 200 if job.status is Status.COMPLETED else 202
    return Reply(code, dumps(emu.engine.status_body(job, with_logs)), request_id)


def result(emu: Emulator, scope: Scope, app_path: str, request_id: str) -> Reply:
    job = _find(emu, scope, app_path, request_id)
    if job is None:
        return Reply(404, _NOT_FOUND, request_id)
    outcome = job.outcome
    if job.status is not Status.COMPLETED or outcome is None:
        where = "in queue" if job.status is Status.IN_QUEUE else "in progress"
        return Reply(400, dumps({"detail": f"Request is still {where}"}), request_id)
    return Reply(outcome.status_code, outcome.body, request_id, outcome.headers)


def cancel(emu: Emulator, scope: Scope, app_path: str, request_id: str) -> Reply:
    job = _find(emu, scope, app_path, request_id)
    if job is None:
        return Reply(404, _CANCEL_NOT_FOUND, request_id)
    if emu.engine.cancel(job):
        return Reply(202, _CANCEL_REQUESTED, request_id)
    return Reply(400, _ALREADY_COMPLETED, request_id)


def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


async def dispatch(emu: Emulator, scope: Scope, receive: Receive, send: Send) -> bool:
    """Serve submit/status/result/cancel; False when the path is not one of them."""
    path: str = scope["path"]
    method: str = scope["method"]
    if method == "POST":
        spec = MODELS.get(path.strip("/"))
        if spec is None:
            return False
        headers = dict(scope["headers"])
        body = await _read_body(receive)
        await _send(send, submit(emu, spec, scope, headers, body))
        return True
    parts = path[1:].split("/")
    if len(parts) not in (4, 5) or parts[2] != "requests" or parts[3] == "" or parts[0] == "v1":
        return False  # (/v1/models/requests/...: the platform API, not a model's queue)
    app_path = f"{parts[0]}/{parts[1]}"
    request_id = parts[3]
    if len(parts) == 4:
        operation: Any = result if method == "GET" else None
    elif parts[4] == "status":
        operation = status if method == "GET" else None
    elif parts[4] == "cancel":
        operation = cancel if method == "PUT" else None
    else:
        operation = None
    if operation is None:
        return False
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
            break
    if not emu.key_ok(authorization):
        await _send(send, Reply(401, _UNAUTHORIZED, None))
    else:
        await _send(send, operation(emu, scope, app_path, request_id))
    return True


# --- FastAPI routes: the status stream, and 404/405 for everything else -----------------------
@router.get("/{owner}/{app}/requests/{request_id}/status/stream", include_in_schema=False)
async def status_stream(request: Request) -> Response:
    emu = emu_of(request)
    if not emu.key_ok(request.headers.get("authorization")):
        return json_response(401, _UNAUTHORIZED)
    params = request.path_params
    request_id = params["request_id"]
    job = _find(emu, request.scope, f"{params['owner']}/{params['app']}", request_id)
    if job is None:
        return json_response(404, _NOT_FOUND, request_id=request_id)
    raw = request.query_params.get("logs")
    with_logs = _flag(raw)
    if with_logs is None:
        reply = _bad_logs(raw or "")
        return json_response(reply.status, reply.body)

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


@router.api_route(
    "/{path:path}",
    methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"],
    include_in_schema=False,
)
async def not_a_queue_route(request: Request) -> Response:
    """Under a known app, anything that is not a queue operation is fal's 405: notably the
    status/result/cancel URL built with the FULL model id instead of `owner/app`."""
    path = request.path_params["path"].strip("/")
    parts = path.split("/")
    if len(parts) >= 2 and f"{parts[0]}/{parts[1]}" in APPS:
        if path in MODELS or "requests" in parts or request.method != "POST":
            note(request, model=path if path in MODELS else None)
            return json_response(405, {"detail": "Method Not Allowed"})
    return json_response(404, {"detail": "Not Found"})
