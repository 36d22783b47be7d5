"""fal's queue protocol: submit, status, result, cancel, and how each answer becomes a value of
``schemas`` or an error of ``errors``. The live status stream is in ``status_stream``.

Status, result and cancel use the URLs fal returned on submit, verbatim: they carry only
``owner/app`` while submit takes the full endpoint id, and fal advises treating them as opaque.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import ValidationError

from app.upstream.answers import (
    error_fields,
    json_or_none,
    permanent,
    protocol_error,
    raise_account_errors,
    raise_read_failure,
)
from app.upstream.errors import (
    AmbiguousSubmitError,
    PermanentUpstreamError,
    TransientUpstreamError,
    UpstreamNotFoundError,
    UpstreamStartTimeoutError,
    UpstreamValidationError,
)
from app.upstream.retry import (
    REQUEST_ID_HEADER,
    is_user_start_timeout,
    parse_retry_after,
    retryable_hint,
)
from app.upstream.schemas import (
    CancelOutcome,
    QueueStatus,
    ResultCancelled,
    ResultFailed,
    ResultNotFound,
    ResultOk,
    ResultOutcome,
    ResultPending,
    Submitted,
)
from app.upstream.transport import FalTransport

log = structlog.get_logger("app.upstream")

# fal_client refuses start timeouts of 1 s or less; fal would time out before routing anyway.
MIN_START_TIMEOUT_S = 1.0

# Phrases of the 400 the result URL gives before completion ("Request is still in progress").
_NOT_READY_MARKERS = ("in progress", "in queue", "not completed", "not yet", "still", "not ready")

_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)+$")

Priority = Literal["normal", "low"]


class QueueOperations:
    """The queue calls of ``FalClient``, which provides ``_transport``."""

    _transport: FalTransport

    async def submit(
        self,
        endpoint_id: str,
        payload: Mapping[str, Any],
        *,
        webhook_url: str | None = None,
        start_timeout_s: float | None = None,
        no_retry: bool = True,
        store_io: bool | None = None,
        priority: Priority | None = None,
        output_expiration_s: int | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Submitted:
        """Put one request in fal's queue. Retried only where no request can exist (see retry.py).

        Raises ``AmbiguousSubmitError`` when a request may have been created without our knowing
        its id, ``TransientUpstreamError`` when none was, and a ``PermanentUpstreamError``
        subclass when fal refused it.
        """
        if not _ENDPOINT_ID.match(endpoint_id) or ".." in endpoint_id:
            raise ValueError(f"not a fal endpoint id: {endpoint_id!r}")
        url = httpx.URL(f"{self._transport.queue_url}/{endpoint_id}")
        if webhook_url is not None:
            if urlsplit(webhook_url).scheme not in {"http", "https"}:
                raise ValueError("webhook_url must be an absolute http(s) URL")
            url = url.copy_merge_params({"fal_webhook": webhook_url})
        headers = self._transport.auth_headers()
        if start_timeout_s is not None:
            if start_timeout_s <= MIN_START_TIMEOUT_S:
                raise ValueError(f"start_timeout_s must be greater than {MIN_START_TIMEOUT_S} s")
            # Same formatting as fal_client (str(float)); the newer name is sent alongside.
            headers["X-Fal-Request-Timeout"] = str(float(start_timeout_s))
            headers["X-Fal-Request-Start-Timeout"] = str(float(start_timeout_s))
        if no_retry:
            headers["X-Fal-No-Retry"] = "1"
        if store_io is not None:
            headers["X-Fal-Store-IO"] = "1" if store_io else "0"
        if priority is not None:
            if priority not in ("normal", "low"):
                raise ValueError("priority must be 'normal' or 'low'")
            headers["X-Fal-Queue-Priority"] = priority
        if output_expiration_s is not None:
            headers["X-Fal-Object-Lifecycle-Preference"] = (
                f'{{"expiration_duration_seconds": {int(output_expiration_s)}}}'
            )
        if tags:
            headers["X-Fal-Tags"] = tags_header(tags)

        response = await self._transport.send(
            "submit", "POST", url, headers=headers, json=dict(payload), endpoint=endpoint_id
        )
        header_id = response.headers.get(REQUEST_ID_HEADER)
        if response.is_success:
            body = json_or_none(response)
            try:
                submitted = Submitted.model_validate(body)
            except ValidationError as exc:
                found = body.get("request_id") if isinstance(body, dict) else None
                raise AmbiguousSubmitError(
                    "fal accepted the submit but its answer is unreadable",
                    request_id=(found if isinstance(found, str) else None) or header_id,
                    status_code=response.status_code,
                ) from exc
            log.info(
                "upstream.submitted",
                endpoint=endpoint_id,
                fal_request_id=submitted.request_id,
                queue_position=submitted.queue_position,
            )
            return submitted
        _raise_submit_failure(response, endpoint_id)

    async def status(self, status_url: str, *, logs: bool = True) -> QueueStatus:
        """Where a request stands. 202 while queued or running, 200 once completed."""
        url = self._transport.trusted_url(status_url, "status").copy_merge_params(
            {"logs": "1" if logs else "0"}
        )
        response = await self._transport.send(
            "status", "GET", url, headers=self._transport.auth_headers()
        )
        if response.status_code in (200, 202):
            body = json_or_none(response)
            if not isinstance(body, dict):
                raise protocol_error("status", response, "status answer is not a JSON object")
            try:
                return read_status(body, response.headers.get(REQUEST_ID_HEADER))
            except ValidationError as exc:
                raise protocol_error("status", response, f"unreadable status: {exc}") from exc
        raise_status_failure("status", response)

    async def result(self, response_url: str) -> ResultOutcome:
        """The outcome of a completed request; a value for every answer fal gives about it.

        Raises only when the call itself fails (transport, auth, unreadable answer).
        """
        url = self._transport.trusted_url(response_url, "result")
        response = await self._transport.send(
            "result", "GET", url, headers=self._transport.auth_headers(), model_answers=True
        )
        request_id = response.headers.get(REQUEST_ID_HEADER)
        status = response.status_code
        if response.is_success:
            body = json_or_none(response)
            if not isinstance(body, dict):
                raise protocol_error("result", response, "result is not a JSON object")
            return ResultOk(output=body, request_id=request_id)
        raise_account_errors(response, "result")
        body, detail, error_type = error_fields(response)
        if status == 404:
            return ResultNotFound(detail=detail, request_id=request_id)
        if status == 405:
            raise protocol_error("result", response, "method not allowed: was the URL rebuilt?")
        if status == 499:
            return ResultCancelled(
                status_code=status, error_type=error_type, detail=detail, request_id=request_id
            )
        if status == 400 and _is_not_ready(body, detail, error_type):
            return ResultPending(detail=detail, request_id=request_id)
        hint = retryable_hint(response.headers)
        retryable = (
            hint if hint is not None else status >= 500 and not is_user_start_timeout(response)
        )
        return ResultFailed(
            status_code=status,
            body=body,
            error_type=error_type,
            detail=detail,
            retryable=retryable,
            request_id=request_id,
        )

    async def cancel(self, cancel_url: str) -> CancelOutcome:
        """Ask fal to cancel. Queued requests are dropped; a running one ends as fal decides."""
        url = self._transport.trusted_url(cancel_url, "cancel")
        response = await self._transport.send(
            "cancel", "PUT", url, headers=self._transport.auth_headers()
        )
        status = response.status_code
        raise_account_errors(response, "cancel")
        if status in (200, 202, 400, 404):
            body = json_or_none(response)
            named = body.get("status") if isinstance(body, dict) else None
            if isinstance(named, str) and named in CancelOutcome.__members__:
                return CancelOutcome(named)
            return {
                200: CancelOutcome.OK,
                202: CancelOutcome.CANCELLATION_REQUESTED,
                400: CancelOutcome.ALREADY_COMPLETED,
                404: CancelOutcome.NOT_FOUND,
            }[status]
        raise_read_failure("cancel", response)


_TAG_KEY = re.compile(r"^[a-z0-9._-]{1,64}$")


def tags_header(tags: Mapping[str, str]) -> str:
    """``X-Fal-Tags``: ``k=v,k=v``. fal drops bad tags silently, so a bad one is refused here,
    where it is our bug: ≤ 10 pairs, keys ``^[a-z0-9._-]+$`` (≤ 64, not ``fal.``), values
    printable ASCII without commas (≤ 256), ≤ 1,024 bytes in all."""
    if len(tags) > 10:
        raise ValueError("at most 10 tags")
    pairs = []
    for key, value in tags.items():
        if not _TAG_KEY.match(key) or key.startswith("fal."):
            raise ValueError(f"bad tag key {key!r}")
        if len(value) > 256 or "," in value or not all(" " <= c <= "~" for c in value):
            raise ValueError(f"bad tag value for {key!r}")
        pairs.append(f"{key}={value}")
    header = ",".join(pairs)
    if len(header.encode()) > 1024:
        raise ValueError("tags over 1,024 bytes")
    return header


@dataclass(frozen=True)
class RequestUrls:
    status_url: str
    response_url: str
    cancel_url: str


def request_urls(queue_url: str, endpoint_id: str, request_id: str) -> RequestUrls:
    """A request's URLs by fal's rule, for a request whose submit answer never came (found by
    its webhook): status, result and cancel live under ``owner/app`` only, not the full model id
    (``fal-ai/kling-video/requests/{id}``; the full id answers 405). fal advises using the URLs
    its submit answers instead; this is for when there is no answer."""
    owner_app = "/".join(endpoint_id.split("/")[:2])
    base = f"{queue_url.rstrip('/')}/{owner_app}/requests/{request_id}"
    return RequestUrls(f"{base}/status", base, f"{base}/cancel")


def read_status(body: dict[str, Any], header_id: str | None) -> QueueStatus:
    """``body`` as a ``QueueStatus`` (raises pydantic's ``ValidationError``); ``header_id`` is the
    answer's ``x-fal-request-id``, used when the body names no request."""
    parsed = QueueStatus.model_validate({**body, "raw": body})
    if parsed.request_id is None and header_id:
        parsed = parsed.model_copy(update={"request_id": header_id})
    return parsed


def raise_status_failure(operation: str, response: httpx.Response) -> NoReturn:
    """An answer about a request that is not a status: 404 means fal does not know it."""
    raise_account_errors(response, operation)
    if response.status_code == 404:
        raise permanent(UpstreamNotFoundError, operation, response, "request not found")
    raise_read_failure(operation, response)


def _raise_submit_failure(response: httpx.Response, endpoint_id: str) -> NoReturn:
    raise_account_errors(response, "submit")
    status = response.status_code
    if status == 422:
        raise permanent(UpstreamValidationError, "submit", response, "fal refused the input")
    if is_user_start_timeout(response):
        raise permanent(UpstreamStartTimeoutError, "submit", response, "start deadline passed")
    if status in (408, 429) or (
        status in (502, 503, 504) and REQUEST_ID_HEADER not in response.headers
    ):
        # Reached only when X-Fal-Retryable said "do not retry": still, no request exists.
        raise TransientUpstreamError(
            f"fal answered {status} and asked not to retry",
            operation="submit",
            status_code=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status >= 500:  # pragma: no cover - classified ambiguous before we get here
        raise AmbiguousSubmitError(f"fal answered {status}", status_code=status)
    if status == 404:
        message = f"unknown endpoint {endpoint_id}"
        raise permanent(UpstreamNotFoundError, "submit", response, message)
    raise permanent(PermanentUpstreamError, "submit", response, f"fal answered {status}")


def _is_not_ready(body: Any, detail: Any, error_type: str | None) -> bool:
    """Tell fal's "not completed yet" 400 from a model's own 400 (``bad_request``), which is a
    final failure: the former names no error type and says the request is still queued/running."""
    if error_type is not None:
        return False
    if isinstance(body, dict) and body.get("status") in ("IN_QUEUE", "IN_PROGRESS"):
        return True
    text = detail.lower() if isinstance(detail, str) else ""
    return any(marker in text for marker in _NOT_READY_MARKERS)
