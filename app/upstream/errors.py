"""The upstream error family.

Every failure of a call to fal ends as one of three kinds, because the worker must take a different
branch for each (style.md principle 7 and 9):

- ``TransientUpstreamError``: nothing happened at fal that we could double by trying again later
  (no request created, or an idempotent read that did not get through). Reschedule the task.
- ``PermanentUpstreamError``: fal answered and the answer will not change by asking again
  (401, locked account, 422, an unknown endpoint …). Fail the job with the upstream detail.
- ``AmbiguousSubmitError``: a submit was written to the wire and no usable answer came back. fal
  may have created (and will bill) the request; only a webhook naming the job or a lookup can
  tell. Never resubmit blindly.

Each class carries a stable ``code`` that the gateway puts in its problem+json answers and on the
job's ``error.code``; changing one is an API change.
"""

from __future__ import annotations

from typing import Any, ClassVar


class UpstreamError(Exception):
    """Base of every error raised by ``app.upstream``."""

    code: ClassVar[str] = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.operation = operation
        # fal's ``x-fal-request-id`` when a response carried one, else the id we were asking about.
        self.request_id = request_id
        self.status_code = status_code

    def __str__(self) -> str:
        parts = [self.message]
        if self.operation:
            parts.append(f"operation={self.operation}")
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class TransientUpstreamError(UpstreamError):
    """Safe to try again later: no request was created, or the call was an idempotent read.

    ``retry_after`` (seconds) is set when fal asked for a pause longer than the in-process cap:
    the worker should reschedule the task at least that far out instead of holding a slot.
    """

    code: ClassVar[str] = "upstream_unavailable"

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, operation=operation, request_id=request_id, status_code=status_code
        )
        self.attempts = attempts
        self.retry_after = retry_after


class WebhookKeysUnavailableError(TransientUpstreamError):
    """fal's JWKS could not be fetched (or held no Ed25519 key): answer 503 so fal redelivers."""

    code: ClassVar[str] = "upstream_jwks_unavailable"


class PermanentUpstreamError(UpstreamError):
    """fal gave a definite answer that asking again will not change."""

    code: ClassVar[str] = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        request_id: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
        detail: Any = None,
        body: Any = None,
    ) -> None:
        super().__init__(
            message, operation=operation, request_id=request_id, status_code=status_code
        )
        # fal's machine code (body ``error_type`` or header ``X-Fal-Error-Type``).
        self.error_type = error_type
        # The body's ``detail``: a string, or pydantic's list of ``{loc, msg, type}`` on 422.
        self.detail = detail
        # The whole parsed body (JSON value, or text truncated to a few KB).
        self.body = body


class UpstreamAuthError(PermanentUpstreamError):
    """401 (or a 403 that is not a locked account): the FAL_KEY is wrong or lacks access."""

    code: ClassVar[str] = "upstream_auth"


class UpstreamAccountLockedError(PermanentUpstreamError):
    """403 "User is locked": the fal account is out of balance; every job fails until topped up."""

    code: ClassVar[str] = "upstream_account_locked"


class UpstreamValidationError(PermanentUpstreamError):
    """422 on submit: the model refused the input (``detail`` is pydantic's list)."""

    code: ClassVar[str] = "upstream_validation"


class UpstreamNotFoundError(PermanentUpstreamError):
    """404 on a stored URL: the request is unknown to fal or its record expired (~1 h)."""

    code: ClassVar[str] = "upstream_not_found"


class UpstreamStartTimeoutError(PermanentUpstreamError):
    """504 with ``X-Fal-Request-Timeout-Type: user``: our start deadline passed at fal."""

    code: ClassVar[str] = "upstream_start_timeout"


class UpstreamProtocolError(PermanentUpstreamError):
    """fal answered something this client cannot read (wrong shape, wrong URL, 405 …)."""

    code: ClassVar[str] = "upstream_bad_response"


class UpstreamUntrustedURLError(PermanentUpstreamError):
    """A stored URL points outside the configured fal hosts; the key is never sent there."""

    code: ClassVar[str] = "upstream_untrusted_url"


class OutputUnavailableError(PermanentUpstreamError):
    """An output URL answered 403/404/410: the file expired or never existed."""

    code: ClassVar[str] = "upstream_output_unavailable"


class OutputTooLargeError(PermanentUpstreamError):
    """An output file is larger than the caller's ``max_bytes``; nothing was kept."""

    code: ClassVar[str] = "upstream_output_too_large"


class UploadNotReplayableError(PermanentUpstreamError):
    """The upload needs its bytes a second time (fallback flow) but the source was a one-shot
    stream that was already consumed. Pass a path to make uploads retryable."""

    code: ClassVar[str] = "upstream_upload_not_replayable"


class AmbiguousSubmitError(UpstreamError):
    """The submit may have created a request at fal; we do not know.

    Raised when the request was written and then the connection failed or timed out before an
    answer, or when fal's own queue answered 5xx (it had seen the request: ``request_id`` holds its
    ``x-fal-request-id``). fal has no idempotency key, so a resubmit could run, and bill, the job
    twice: the gateway waits for a webhook naming the job, then applies its ambiguous-submit
    setting.
    """

    code: ClassVar[str] = "upstream_ambiguous_submit"

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = "submit",
        request_id: str | None = None,
        status_code: int | None = None,
        error_type: str | None = None,
        retryable_hint: bool | None = None,
    ) -> None:
        super().__init__(
            message, operation=operation, request_id=request_id, status_code=status_code
        )
        self.error_type = error_type
        # fal's X-Fal-Retryable / X-Fal-Needs-Retry on the answer, if any. It says whether the
        # failure is worth retrying, NOT whether a request exists, so it never turns this error
        # into a retry by itself.
        self.retryable_hint = retryable_hint


class WebhookVerificationError(Exception):
    """An inbound webhook failed verification; the endpoint answers 401 and counts ``reason``.

    Reasons: ``missing_header``, ``bad_timestamp``, ``timestamp_out_of_window``,
    ``malformed_signature``, ``bad_signature``, ``bad_body``, ``request_id_mismatch``.
    """

    code: ClassVar[str] = "webhook_signature_invalid"

    def __init__(self, reason: str, message: str | None = None) -> None:
        super().__init__(message or reason)
        self.reason = reason
