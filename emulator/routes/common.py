"""Response helpers shared by the route modules."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import Request
from starlette.responses import Response

from emulator.errors import dumps
from emulator.requestlog import ENTRY_KEY
from emulator.state import Emulator

JSON = "application/json"


def emu_of(request: Request) -> Emulator:
    emu: Emulator = request.app.state.emu
    return emu


def json_response(
    status: int,
    body: bytes | dict[str, Any] | list[Any],
    *,
    request_id: str | None = None,
    fal: bool = True,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON answer; `fal=True` marks it as coming from fal's queue (x-fal-request-id)."""
    content = body if isinstance(body, bytes) else dumps(body)
    all_headers = dict(headers) if headers else {}
    if fal:
        all_headers["x-fal-request-id"] = request_id or str(uuid.uuid4())
    return Response(content, status_code=status, media_type=JSON, headers=all_headers)


def note(request: Request, **fields: Any) -> None:
    """Add what the handler learnt (model, request id, outcome) to the request-log entry."""
    entry = request.scope.get(ENTRY_KEY)
    if entry is not None:
        entry.update(fields)
