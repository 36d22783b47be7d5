"""The fal queue client the worker uses: submit, status, result, cancel, upload, download.

One ``FalClient`` (and one ``httpx.AsyncClient`` under it) per process. Every retry decision is
taken by ``app.upstream.retry`` (read its docstring first); this module sends, classifies and maps
fal's answers to the typed values of ``schemas`` or the errors of ``errors``.

Rules that matter here:
- Status, result and cancel use the URLs fal returned on submit, verbatim: they carry only
  ``owner/app`` while submit takes the full endpoint id, and fal advises treating them as opaque.
- The fal key goes only to the configured fal origins (queue, REST and any ``trusted_origins``):
  stored URLs are checked before a request is made. Output and signed upload URLs get no key.
- Nothing here knows about jobs, tenants or the database; configuration comes in as arguments.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

import httpx
import structlog
from pydantic import ValidationError

from app.upstream.errors import (
    AmbiguousSubmitError,
    OutputTooLargeError,
    OutputUnavailableError,
    PermanentUpstreamError,
    TransientUpstreamError,
    UploadNotReplayableError,
    UpstreamAccountLockedError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamNotFoundError,
    UpstreamProtocolError,
    UpstreamStartTimeoutError,
    UpstreamUntrustedURLError,
    UpstreamValidationError,
)
from app.upstream.retry import (
    CALL_POLICY,
    REQUEST_ID_HEADER,
    SUBMIT_POLICY,
    RetryPolicy,
    Uniform,
    Verdict,
    classify_call_exception,
    classify_call_response,
    classify_submit_exception,
    classify_submit_response,
    is_user_start_timeout,
    parse_retry_after,
    retryable_hint,
)
from app.upstream.schemas import (
    CancelOutcome,
    Downloaded,
    QueueStatus,
    ResultCancelled,
    ResultFailed,
    ResultNotFound,
    ResultOk,
    ResultOutcome,
    ResultPending,
    Submitted,
)
from app.upstream.streams import (
    DEFAULT_CHUNK_SIZE,
    ByteSource,
    ChunkSink,
    FileWriter,
    SourceAlreadyConsumed,
    UploadBody,
)

log = structlog.get_logger("app.upstream")

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"
DEFAULT_CDN_URL = "https://v3.fal.media"

ERROR_TYPE_HEADER = "x-fal-error-type"
# fal_client refuses start timeouts of 1 s or less; fal would time out before routing anyway.
MIN_START_TIMEOUT_S = 1.0
# Refresh a CDN token this long before fal says it expires, so an upload never starts on a token
# that dies mid-body.
CDN_TOKEN_MARGIN = timedelta(seconds=60)
# How much of a non-JSON error body is kept on errors (and so in the job's error column).
MAX_ERROR_TEXT = 4096

# Phrases of the 400 the result URL gives before completion ("Request is still in progress").
_NOT_READY_MARKERS = ("in progress", "in queue", "not completed", "not yet", "still", "not ready")

_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9_.-]+)+$")

Sleep = Callable[[float], Awaitable[Any]]
Priority = Literal["normal", "low"]


@dataclass(frozen=True, slots=True)
class FalTimeouts:
    """Seconds. ``read``/``write`` bound each socket operation, not a whole transfer, so they also
    suit streamed uploads and downloads."""

    connect: float = 5.0
    read: float = 30.0
    write: float = 30.0
    pool: float = 10.0

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def build_http_client(
    timeouts: FalTimeouts | None = None,
    *,
    max_connections: int = 100,
    user_agent: str = "foley-gateway",
) -> httpx.AsyncClient:
    """The process's long-lived client for fal (share it with ``FalWebhookVerifier``).

    Keep-alive connections expire after 5 s idle, below common server idle timeouts: a pooled
    connection the server already closed would otherwise turn a submit into an ambiguous one.
    """
    return httpx.AsyncClient(
        timeout=(timeouts or FalTimeouts()).as_httpx(),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max(1, max_connections // 4),
            keepalive_expiry=5.0,
        ),
        follow_redirects=False,
        headers={"User-Agent": user_agent},
    )


@dataclass(slots=True)
class _CdnToken:
    header: str  # "{token_type} {token}"
    expires_at: datetime | None


class _FallbackToInitiate(Exception):
    """The CDN flow is not available here (404/405): use initiate + PUT."""


class FalClient:
    """Typed client for fal's queue, storage and output files.

    ``http`` is injectable (tests pass one on an ``httpx.MockTransport``; the app passes the
    process-wide client). A client created here is closed by ``aclose()``; an injected one is not.
    ``sleep`` and ``uniform`` make retry delays testable without waiting.
    """

    def __init__(
        self,
        key: str,
        *,
        queue_url: str = DEFAULT_QUEUE_URL,
        rest_url: str = DEFAULT_REST_URL,
        cdn_url: str = DEFAULT_CDN_URL,
        timeouts: FalTimeouts | None = None,
        submit_policy: RetryPolicy = SUBMIT_POLICY,
        call_policy: RetryPolicy = CALL_POLICY,
        trusted_origins: Iterable[str] = (),
        http: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        uniform: Uniform = random.uniform,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not key:
            raise ValueError("a fal key is required")
        self._key = key
        self._queue_url = _base_url(queue_url)
        self._rest_url = _base_url(rest_url)
        self._cdn_url = _base_url(cdn_url)
        self._timeouts = timeouts or FalTimeouts()
        self._submit_policy = submit_policy
        self._call_policy = call_policy
        self._trusted = {_origin(self._queue_url), _origin(self._rest_url)} | {
            _origin(_base_url(url)) for url in trusted_origins
        }
        self._owns_http = http is None
        self._http = http if http is not None else build_http_client(self._timeouts)
        self._sleep = sleep
        self._uniform = uniform
        self._chunk_size = chunk_size
        self._cdn_token: _CdnToken | None = None
        self._cdn_token_lock = asyncio.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"FalClient(queue_url={self._queue_url!r})"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> FalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- queue ------------------------------------------------------------------------------

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
    ) -> Submitted:
        """Put one request in fal's queue. Retried only where no request can exist (see retry.py).

        Raises ``AmbiguousSubmitError`` when a request may have been created without our knowing
        its id, ``TransientUpstreamError`` when none was, and a ``PermanentUpstreamError``
        subclass when fal refused it.
        """
        if not _ENDPOINT_ID.match(endpoint_id) or ".." in endpoint_id:
            raise ValueError(f"not a fal endpoint id: {endpoint_id!r}")
        url = httpx.URL(f"{self._queue_url}/{endpoint_id}")
        if webhook_url is not None:
            if urlsplit(webhook_url).scheme not in {"http", "https"}:
                raise ValueError("webhook_url must be an absolute http(s) URL")
            url = url.copy_merge_params({"fal_webhook": webhook_url})
        headers = self._auth_headers()
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

        response = await self._send(
            "submit", "POST", url, headers=headers, json=dict(payload), endpoint=endpoint_id
        )
        header_id = response.headers.get(REQUEST_ID_HEADER)
        if response.is_success:
            body = _json_or_none(response)
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
                request_id=submitted.request_id,
                queue_position=submitted.queue_position,
            )
            return submitted
        self._raise_submit_failure(response, endpoint_id)

    async def status(self, status_url: str, *, logs: bool = True) -> QueueStatus:
        """Where a request stands. 202 while queued or running, 200 once completed."""
        url = self._trusted_url(status_url, "status").copy_merge_params(
            {"logs": "1" if logs else "0"}
        )
        response = await self._send("status", "GET", url, headers=self._auth_headers())
        header_id = response.headers.get(REQUEST_ID_HEADER)
        if response.status_code in (200, 202):
            body = _json_or_none(response)
            if not isinstance(body, dict):
                raise _protocol_error("status", response, "status answer is not a JSON object")
            try:
                parsed = QueueStatus.model_validate({**body, "raw": body})
            except ValidationError as exc:
                raise _protocol_error("status", response, f"unreadable status: {exc}") from exc
            if parsed.request_id is None and header_id:
                parsed = parsed.model_copy(update={"request_id": header_id})
            return parsed
        self._raise_account_errors(response, "status")
        if response.status_code == 404:
            raise _permanent(UpstreamNotFoundError, "status", response, "request not found")
        self._raise_read_failure("status", response)

    async def result(self, response_url: str) -> ResultOutcome:
        """The outcome of a completed request; a value for every answer fal gives about it.

        Raises only when the call itself fails (transport, auth, unreadable answer).
        """
        url = self._trusted_url(response_url, "result")
        response = await self._send(
            "result", "GET", url, headers=self._auth_headers(), model_answers=True
        )
        request_id = response.headers.get(REQUEST_ID_HEADER)
        status = response.status_code
        if response.is_success:
            body = _json_or_none(response)
            if not isinstance(body, dict):
                raise _protocol_error("result", response, "result is not a JSON object")
            return ResultOk(output=body, request_id=request_id)
        self._raise_account_errors(response, "result")
        body, detail, error_type = _error_fields(response)
        if status == 404:
            return ResultNotFound(detail=detail, request_id=request_id)
        if status == 405:
            raise _protocol_error("result", response, "method not allowed: was the URL rebuilt?")
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
        url = self._trusted_url(cancel_url, "cancel")
        response = await self._send("cancel", "PUT", url, headers=self._auth_headers())
        status = response.status_code
        self._raise_account_errors(response, "cancel")
        if status in (200, 202, 400, 404):
            body = _json_or_none(response)
            named = body.get("status") if isinstance(body, dict) else None
            if isinstance(named, str) and named in CancelOutcome.__members__:
                return CancelOutcome(named)
            return {
                200: CancelOutcome.OK,
                202: CancelOutcome.CANCELLATION_REQUESTED,
                400: CancelOutcome.ALREADY_COMPLETED,
                404: CancelOutcome.NOT_FOUND,
            }[status]
        self._raise_read_failure("cancel", response)

    # --- storage ----------------------------------------------------------------------------

    async def upload_file(
        self,
        source: ByteSource,
        content_type: str,
        file_name: str,
        *,
        size: int | None = None,
    ) -> str:
        """Upload bytes to fal's storage; returns a URL fal can fetch without auth.

        ``source`` is a path (streamed from disk, retryable) or an async iterable of chunks
        (streamed once). The CDN flow is tried first; if fal's hosts do not offer it (404/405),
        the initiate + PUT flow is used.
        """
        body = UploadBody(source, chunk_size=self._chunk_size)
        if size is None:
            size = await body.size()
        try:
            return await self._upload_cdn(body, content_type, file_name, size)
        except _FallbackToInitiate:
            log.warning("upstream.upload_fallback", file_name=file_name)
        return await self._upload_initiate(body, content_type, file_name, size)

    async def download(
        self, url: str, dest: str | os.PathLike[str] | ChunkSink, *, max_bytes: int
    ) -> Downloaded:
        """Stream a (public, expiring) output file to ``dest``: a path, or an async chunk callback.

        No credentials are sent. More than ``max_bytes`` raises ``OutputTooLargeError`` and, for
        a path, leaves nothing behind; a path only appears once the file is complete.
        """
        if urlsplit(url).scheme not in {"http", "https"}:
            raise ValueError("output URLs must be http(s)")
        response = await self._send(
            "download",
            "GET",
            httpx.URL(url),
            # Media is already compressed; identity keeps Content-Length meaningful for the cap.
            headers={"Accept-Encoding": "identity"},
            stream=True,
            follow_redirects=True,
        )
        try:
            if not response.is_success:
                await response.aread()
                if response.status_code in (401, 403, 404, 410):
                    raise _permanent(
                        OutputUnavailableError, "download", response, "output file is gone"
                    )
                self._raise_read_failure("download", response)
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise OutputTooLargeError(
                    f"output is {declared} bytes, over the {max_bytes} byte limit",
                    operation="download",
                    status_code=response.status_code,
                )
            size = await _stream_to(response, dest, max_bytes)
            return Downloaded(size=size, content_type=response.headers.get("content-type"))
        finally:
            await response.aclose()

    # --- internals: storage -----------------------------------------------------------------

    async def _upload_cdn(
        self, body: UploadBody, content_type: str, file_name: str, size: int | None
    ) -> str:
        for round_ in (1, 2):
            token = await self._get_cdn_token()
            headers = {
                "Authorization": token.header,
                "Content-Type": content_type,
                "X-Fal-File-Name": file_name,
                "Accept": "application/json",
            }
            if size is not None:
                headers["Content-Length"] = str(size)
            response = await self._send(
                "upload",
                "POST",
                httpx.URL(f"{self._cdn_url}/files/upload"),
                headers=headers,
                content=_content_factory(body),
            )
            if response.status_code in (404, 405):
                raise _FallbackToInitiate
            if response.status_code == 401 and round_ == 1:
                # A token fal revoked before its expiry: fetch a fresh one once.
                self._cdn_token = None
                continue
            return self._access_url(response, "upload", key="access_url")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _upload_initiate(
        self, body: UploadBody, content_type: str, file_name: str, size: int | None
    ) -> str:
        url = httpx.URL(f"{self._rest_url}/storage/upload/initiate").copy_merge_params(
            {"storage_type": "gcs"}
        )
        response = await self._send(
            "upload_initiate",
            "POST",
            url,
            headers=self._auth_headers(),
            json={"file_name": file_name, "content_type": content_type},
        )
        self._raise_account_errors(response, "upload_initiate")
        if not response.is_success:
            self._raise_read_failure("upload_initiate", response)
        answer = _json_or_none(response)
        upload_url = answer.get("upload_url") if isinstance(answer, dict) else None
        file_url = answer.get("file_url") if isinstance(answer, dict) else None
        if not isinstance(upload_url, str) or not isinstance(file_url, str):
            raise _protocol_error("upload_initiate", response, "no upload_url/file_url")
        headers = {"Content-Type": content_type}
        if size is not None:
            headers["Content-Length"] = str(size)
        # A signed URL: it authorises the PUT by itself; the fal key is not sent to it.
        put = await self._send(
            "upload_put",
            "PUT",
            httpx.URL(upload_url),
            headers=headers,
            content=_content_factory(body),
        )
        if not put.is_success:
            self._raise_read_failure("upload_put", put)
        return file_url

    async def _get_cdn_token(self) -> _CdnToken:
        async with self._cdn_token_lock:
            token = self._cdn_token
            now = datetime.now(UTC)
            if token is not None and (
                token.expires_at is None or token.expires_at - CDN_TOKEN_MARGIN > now
            ):
                return token
            url = httpx.URL(f"{self._rest_url}/storage/auth/token").copy_merge_params(
                {"storage_type": "fal-cdn-v3"}
            )
            response = await self._send(
                "upload_token", "POST", url, headers=self._auth_headers(), json={}
            )
            if response.status_code in (404, 405):
                raise _FallbackToInitiate
            self._raise_account_errors(response, "upload_token")
            if not response.is_success:
                self._raise_read_failure("upload_token", response)
            data = _json_or_none(response)
            if not isinstance(data, dict) or not data.get("token") or not data.get("token_type"):
                raise _protocol_error("upload_token", response, "no token in the answer")
            expires_at = _parse_datetime(data.get("expires_at"))
            token = _CdnToken(header=f"{data['token_type']} {data['token']}", expires_at=expires_at)
            # An unreadable expiry is not cached: a fresh token per upload is slower, not wrong.
            self._cdn_token = token if expires_at is not None else None
            return token

    def _access_url(self, response: httpx.Response, operation: str, *, key: str) -> str:
        self._raise_account_errors(response, operation)
        if not response.is_success:
            self._raise_read_failure(operation, response)
        data = _json_or_none(response)
        value = data.get(key) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            raise _protocol_error(operation, response, f"no {key} in the answer")
        return value

    # --- internals: sending -----------------------------------------------------------------

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}", "Accept": "application/json"}

    def _trusted_url(self, url: str, operation: str) -> httpx.URL:
        parsed = httpx.URL(url)
        if _origin(url) not in self._trusted:
            raise UpstreamUntrustedURLError(
                f"{parsed.scheme}://{parsed.netloc.decode()} is not a configured fal host",
                operation=operation,
            )
        return parsed

    async def _send(
        self,
        operation: str,
        method: str,
        url: httpx.URL,
        *,
        headers: dict[str, str],
        json: Any = None,
        content: Callable[[], AsyncIterator[bytes]] | None = None,
        model_answers: bool = False,
        stream: bool = False,
        follow_redirects: bool = False,
        endpoint: str | None = None,
    ) -> httpx.Response:
        """One call under the retry policy. Returns the response to map (any status); raises for
        retries exhausted, ambiguous submits and unusable transport failures."""
        is_submit = operation == "submit"
        policy = self._submit_policy if is_submit else self._call_policy
        where = endpoint or _loggable(url)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                request = self._http.build_request(
                    method,
                    url,
                    headers=headers,
                    json=json,
                    content=content() if content is not None else None,
                )
                response = await self._http.send(
                    request, stream=stream, follow_redirects=follow_redirects
                )
            except SourceAlreadyConsumed as exc:
                raise UploadNotReplayableError(
                    "the upload stream was consumed by a failed attempt; pass a path to retry",
                    operation=operation,
                ) from exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                latency_ms = round((time.perf_counter() - started) * 1000, 1)
                verdict = (
                    classify_submit_exception(exc) if is_submit else classify_call_exception(exc)
                )
                log.warning(
                    "upstream.call_failed",
                    operation=operation,
                    endpoint=where,
                    attempt=attempt,
                    latency_ms=latency_ms,
                    error=type(exc).__name__,
                    verdict=verdict.value,
                )
                if verdict is Verdict.RETRY and attempt < policy.max_attempts:
                    await self._pause(policy.backoff_s(attempt, self._uniform), operation, attempt)
                    continue
                raise _exception_error(verdict, exc, operation, attempt) from exc

            latency_ms = round((time.perf_counter() - started) * 1000, 1)
            request_id = response.headers.get(REQUEST_ID_HEADER)
            if is_submit:
                verdict = classify_submit_response(response, policy)
            else:
                verdict = classify_call_response(response, model_answers=model_answers)
            log.info(
                "upstream.call",
                operation=operation,
                endpoint=where,
                method=method,
                status=response.status_code,
                request_id=request_id,
                attempt=attempt,
                latency_ms=latency_ms,
            )
            if verdict is Verdict.ANSWER:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if verdict is Verdict.AMBIGUOUS:
                _, _, error_type = _error_fields(response)
                raise AmbiguousSubmitError(
                    f"fal answered {response.status_code} to a submit it may have accepted",
                    request_id=request_id,
                    status_code=response.status_code,
                    error_type=error_type,
                    retryable_hint=retryable_hint(response.headers),
                )
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = policy.delay_s(attempt, retry_after, self._uniform)
            if delay is None or attempt >= policy.max_attempts:
                raise TransientUpstreamError(
                    f"fal answered {response.status_code} after {attempt} attempt(s)",
                    operation=operation,
                    request_id=request_id,
                    status_code=response.status_code,
                    attempts=attempt,
                    retry_after=retry_after,
                )
            await self._pause(delay, operation, attempt)

    async def _pause(self, delay: float, operation: str, attempt: int) -> None:
        log.info("upstream.retry", operation=operation, attempt=attempt, delay_s=round(delay, 3))
        await self._sleep(delay)

    # --- internals: mapping answers to errors -----------------------------------------------

    def _raise_account_errors(self, response: httpx.Response, operation: str) -> None:
        if response.status_code not in (401, 403):
            return
        body, detail, _ = _error_fields(response)
        text = detail if isinstance(detail, str) else str(body)
        cls: type[PermanentUpstreamError] = UpstreamAuthError
        if response.status_code == 403 and "locked" in text.lower():
            cls = UpstreamAccountLockedError
        error = _permanent(cls, operation, response, text)
        # Loud: every job fails until a human fixes the key or the balance.
        log.error(
            "upstream.account_error",
            operation=operation,
            status=response.status_code,
            code=error.code,
            detail=text[:500],
        )
        raise error

    def _raise_submit_failure(self, response: httpx.Response, endpoint_id: str) -> NoReturn:
        self._raise_account_errors(response, "submit")
        status = response.status_code
        if status == 422:
            raise _permanent(UpstreamValidationError, "submit", response, "fal refused the input")
        if is_user_start_timeout(response):
            raise _permanent(UpstreamStartTimeoutError, "submit", response, "start deadline passed")
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
            raise _permanent(
                UpstreamNotFoundError, "submit", response, f"unknown endpoint {endpoint_id}"
            )
        raise _permanent(PermanentUpstreamError, "submit", response, f"fal answered {status}")

    def _raise_read_failure(self, operation: str, response: httpx.Response) -> NoReturn:
        """Map an unexpected answer to a read-type call (status, cancel, storage, download)."""
        self._raise_account_errors(response, operation)
        status = response.status_code
        if status == 405:
            raise _protocol_error(operation, response, "method not allowed: was the URL rebuilt?")
        if status >= 500 or status in (408, 429):
            _, detail, _ = _error_fields(response)
            raise TransientUpstreamError(
                f"fal answered {status}: {_short(detail)}",
                operation=operation,
                request_id=response.headers.get(REQUEST_ID_HEADER),
                status_code=status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        raise _permanent(PermanentUpstreamError, operation, response, f"fal answered {status}")


# --- helpers ------------------------------------------------------------------------------------


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    return url.rstrip("/")


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    default_port = {"http": 80, "https": 443}.get(parsed.scheme)
    return (parsed.scheme, parsed.host.lower(), parsed.port or default_port)


def _loggable(url: httpx.URL) -> str:
    # Host and path only: queries may carry tokens (fal_webhook), output paths are capabilities
    # but naming the file is useful; signed upload URLs carry their signature in the query.
    return f"{url.host}{url.path}"


def _content_factory(body: UploadBody) -> Callable[[], AsyncIterator[bytes]]:
    return body.stream


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_fields(response: httpx.Response) -> tuple[Any, Any, str | None]:
    """(body, detail, error_type) of an error answer, whatever its shape."""
    body = _json_or_none(response)
    if body is None:
        body = response.text[:MAX_ERROR_TEXT]
    detail: Any = body.get("detail") if isinstance(body, dict) else body
    error_type = body.get("error_type") if isinstance(body, dict) else None
    if not isinstance(error_type, str):
        error_type = response.headers.get(ERROR_TYPE_HEADER)
    return body, detail, error_type


def _is_not_ready(body: Any, detail: Any, error_type: str | None) -> bool:
    """Tell fal's "not completed yet" 400 from a model's own 400 (``bad_request``), which is a
    final failure: the former names no error type and says the request is still queued/running."""
    if error_type is not None:
        return False
    if isinstance(body, dict) and body.get("status") in ("IN_QUEUE", "IN_PROGRESS"):
        return True
    text = detail.lower() if isinstance(detail, str) else ""
    return any(marker in text for marker in _NOT_READY_MARKERS)


def _permanent(
    cls: type[PermanentUpstreamError], operation: str, response: httpx.Response, message: str
) -> PermanentUpstreamError:
    body, detail, error_type = _error_fields(response)
    return cls(
        message,
        operation=operation,
        request_id=response.headers.get(REQUEST_ID_HEADER),
        status_code=response.status_code,
        error_type=error_type,
        detail=detail,
        body=body,
    )


def _protocol_error(
    operation: str, response: httpx.Response, message: str
) -> PermanentUpstreamError:
    return _permanent(UpstreamProtocolError, operation, response, message)


def _exception_error(
    verdict: Verdict, exc: Exception, operation: str, attempts: int
) -> UpstreamError:
    name = type(exc).__name__
    if verdict is Verdict.AMBIGUOUS:
        return AmbiguousSubmitError(f"{name} after the submit was sent: {exc}")
    if verdict is Verdict.RETRY:
        return TransientUpstreamError(
            f"{name} after {attempts} attempt(s): {exc}", operation=operation, attempts=attempts
        )
    return PermanentUpstreamError(f"{name}: {exc}", operation=operation)


def _short(detail: Any) -> str:
    text = detail if isinstance(detail, str) else str(detail)
    return text[:200]


def _parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _stream_to(
    response: httpx.Response, dest: str | os.PathLike[str] | ChunkSink, max_bytes: int
) -> int:
    writer: FileWriter | None = None
    if callable(dest):
        sink: ChunkSink = dest
    else:
        writer = FileWriter(dest)
        sink = writer.write
    if writer is not None:
        await writer.open()
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise OutputTooLargeError(
                    f"output exceeds the {max_bytes} byte limit",
                    operation="download",
                    status_code=response.status_code,
                )
            await sink(chunk)
    except httpx.TransportError as exc:
        if writer is not None:
            await writer.discard()
        raise TransientUpstreamError(
            f"output download broke off after {size} bytes: {type(exc).__name__}",
            operation="download",
        ) from exc
    except httpx.HTTPError as exc:  # e.g. a Content-Encoding that does not decode
        if writer is not None:
            await writer.discard()
        raise UpstreamProtocolError(
            f"output download unreadable: {type(exc).__name__}: {exc}", operation="download"
        ) from exc
    except BaseException:
        if writer is not None:
            await writer.discard()
        raise
    if writer is not None:
        await writer.commit()
    return size
