"""The OpenAPI description of the job requests' headers (``Prefer``, ``Cancel-After``,
``Last-Event-ID``) and of the event stream: these are read from the request by the endpoints
(app.jobs.endpoints), not declared as FastAPI parameters, so they are described here."""

from __future__ import annotations

from typing import Any

from app.jobs.preferences import MAX_SEQ, WAIT_MAX_S
from app.jobs.schemas import JobOut

PREFER_PARAMETER: dict[str, Any] = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    # Any value is valid: preferences the server does not understand are ignored (RFC 7240).
    "schema": {"type": "string"},
    "examples": {"wait": {"value": "wait=30"}},
    "description": f"RFC 7240. `wait=N`: answer once the job is finished, or after N seconds "
    f"(at most {WAIT_MAX_S}; `wait` alone: {WAIT_MAX_S}) with the job as it then stands. The "
    "answer says `Preference-Applied: wait=N`. Other preferences are ignored.",
}

# What app.jobs.preferences.cancel_after reads: Go-style parts (1h30m, 500ms) or seconds.
DURATION_PATTERN = r"^(([0-9]+(\.[0-9]+)?(ms|s|m|h))+|[0-9]+(\.[0-9]+)?)$"

CANCEL_AFTER_PARAMETER: dict[str, Any] = {
    "name": "Cancel-After",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": DURATION_PATTERN},
    "examples": {"ninety seconds": {"value": "90s"}, "five minutes": {"value": "5m"}},
    "description": "Cancel the job when this long has passed since it was accepted (`90s`, "
    "`5m`, `1h30m`, `500ms`, or seconds; positive, at most 30 days). A job that had not "
    "started running at fal by then ends `aborted` and costs nothing; one running is canceled "
    "at fal (and billed what fal bills for it). A value that is not a duration: 400 "
    "`invalid_header`.",
}

LAST_EVENT_ID_PARAMETER: dict[str, Any] = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
    "description": "The `id` (seq) of the last event received: what follows it is sent (the "
    "stream resumes after it; an EventSource sends it when it reconnects). Wins over `after`.",
}

PREFERENCE_APPLIED = {
    "Preference-Applied": {
        "description": "With `Prefer: wait`: the wait applied, `wait=N` (RFC 7240).",
        "schema": {"type": "string", "examples": ["wait=30"]},
    }
}


def held_response(description: str) -> dict[str, Any]:
    return {"model": JobOut, "description": description, "headers": PREFERENCE_APPLIED}


_STREAM_EXAMPLE = (
    'id: 3\nevent: job.started\ndata: {"object":"job_event","id":812,"job_id":"6f1c…",'
    '"seq":3,"type":"job.started","data":{"request_id":"764c…","queue_position":0},'
    '"created_at":"2026-12-07T10:00:01.234Z"}\n\n'
    ": keep-alive\n\n"
    'id: 4\nevent: job.processing\ndata: {"object":"job_event","id":815,"job_id":"6f1c…",'
    '"seq":4,"type":"job.processing","data":{"started_at":"2026-12-07T10:00:02.001Z"},'
    '"created_at":"2026-12-07T10:00:02.010Z"}\n\n'
)

EVENT_STREAM_RESPONSE: dict[str, Any] = {
    "description": "The events (JSON), or with `Accept: text/event-stream` the live stream: one "
    "message per event — `id:` its seq, `event:` its type, `data:` the event as the JSON list "
    "gives it — everything so far first (after `Last-Event-ID`), then each as it commits, a "
    "`: keep-alive` comment every 15 s, and the end of the stream after the job's final event "
    "(job.succeeded, job.failed, job.canceled or job.aborted).",
    "content": {
        "text/event-stream": {
            "schema": {"type": "string", "description": "Server-Sent Events."},
            "example": _STREAM_EXAMPLE,
        }
    },
}
