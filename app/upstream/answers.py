"""Reading fal's answers: the fields of an error body, whatever its shape, and the error of
``errors`` each unexpected answer maps to. Shared by the queue and storage calls and the retry
loop, so one answer means the same thing whichever call received it.
"""

from __future__ import annotations

from typing import Any, NoReturn

import httpx
import structlog

from app.upstream.errors import (
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamAccountLockedError,
    UpstreamAuthError,
    UpstreamProtocolError,
)
from app.upstream.retry import REQUEST_ID_HEADER, parse_retry_after

log = structlog.get_logger("app.upstream")

ERROR_TYPE_HEADER = "x-fal-error-type"
# How much of a non-JSON error body is kept on errors (and so in the job's error column).
MAX_ERROR_TEXT = 4096


def json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def error_fields(response: httpx.Response) -> tuple[Any, Any, str | None]:
    """(body, detail, error_type) of an error answer, whatever its shape."""
    body = json_or_none(response)
    if body is None:
        body = response.text[:MAX_ERROR_TEXT]
    detail: Any = body.get("detail") if isinstance(body, dict) else body
    error_type = body.get("error_type") if isinstance(body, dict) else None
    if not isinstance(error_type, str):
        error_type = response.headers.get(ERROR_TYPE_HEADER)
    return body, detail, error_type


def permanent(
    cls: type[PermanentUpstreamError], operation: str, response: httpx.Response, message: str
) -> PermanentUpstreamError:
    body, detail, error_type = error_fields(response)
    return cls(
        message,
        operation=operation,
        request_id=response.headers.get(REQUEST_ID_HEADER),
        status_code=response.status_code,
        error_type=error_type,
        detail=detail,
        body=body,
    )


def protocol_error(
    operation: str, response: httpx.Response, message: str
) -> PermanentUpstreamError:
    return permanent(UpstreamProtocolError, operation, response, message)


def raise_account_errors(response: httpx.Response, operation: str) -> None:
    if response.status_code not in (401, 403):
        return
    body, detail, _ = error_fields(response)
    text = detail if isinstance(detail, str) else str(body)
    cls: type[PermanentUpstreamError] = UpstreamAuthError
    if response.status_code == 403 and "locked" in text.lower():
        cls = UpstreamAccountLockedError
    error = permanent(cls, operation, response, text)
    # Loud: every job fails until a human fixes the key or the balance.
    log.error(
        "upstream.account_error",
        operation=operation,
        status=response.status_code,
        code=error.code,
        detail=text[:500],
    )
    raise error


def raise_read_failure(operation: str, response: httpx.Response) -> NoReturn:
    """Map an unexpected answer to a read-type call (status, cancel, storage, download)."""
    raise_account_errors(response, operation)
    status = response.status_code
    if status == 405:
        raise protocol_error(operation, response, "method not allowed: was the URL rebuilt?")
    if status >= 500 or status in (408, 429):
        _, detail, _ = error_fields(response)
        raise TransientUpstreamError(
            f"fal answered {status}: {_short(detail)}",
            operation=operation,
            request_id=response.headers.get(REQUEST_ID_HEADER),
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    raise permanent(PermanentUpstreamError, operation, response, f"fal answered {status}")


def _short(detail: Any) -> str:
    text = detail if isinstance(detail, str) else str(detail)
    return text[:200]
