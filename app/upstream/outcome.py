"""How a fal request ended, read from whichever channel told us: one parser for all of them.

fal reports an ending three ways: a webhook body, a status (polled or streamed) that says
COMPLETED, and the result endpoint. The result endpoint's answers are parsed where they are read
(app.upstream.fal: they need the HTTP response); this module turns a webhook body into the same
``ResultOutcome`` values, so the job lifecycle sees one vocabulary whatever the channel.
"""

from __future__ import annotations

import re
from typing import Any

from app.upstream.schemas import ResultCancelled, ResultFailed, ResultOk, ResultOutcome

_STATUS_IN_ERROR = re.compile(r"\b([1-5]\d\d)\b")


class FetchResult:
    """The webhook says the request completed but carries no output (fal could not serialise
    it): the result endpoint still has it."""

    __slots__ = ()


FETCH_RESULT = FetchResult()


def error_status(error: Any) -> int:
    """The status code in fal's webhook ``error`` text ("Invalid status code: 422"); 500 when
    it names none (fal's own failures)."""
    match = _STATUS_IN_ERROR.search(str(error or ""))
    return int(match.group(1)) if match else 500


def from_webhook(body: dict[str, Any]) -> ResultOutcome | FetchResult:
    """A stored webhook body (``{"request_id", "status", "payload", "payload_error", "error"}``)
    as the outcome it reports."""
    request_id = body.get("request_id")
    payload = body.get("payload")
    if body.get("status") == "OK" and isinstance(payload, dict):
        return ResultOk(output=payload, request_id=request_id)
    if payload is None and body.get("payload_error"):
        return FETCH_RESULT
    if body.get("status") == "OK":
        # OK without an object payload and without payload_error: nothing to read here.
        return FETCH_RESULT
    status_code = error_status(body.get("error"))
    detail = payload.get("detail") if isinstance(payload, dict) else payload
    error_type = payload.get("error_type") if isinstance(payload, dict) else None
    if status_code == 499:
        return ResultCancelled(
            status_code=499, error_type=error_type, detail=detail, request_id=request_id
        )
    return ResultFailed(
        status_code=status_code,
        body=payload,
        error_type=error_type,
        detail=detail,
        retryable=status_code >= 500,
        request_id=request_id,
    )
