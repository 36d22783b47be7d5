"""How the client talks to fal: the process's httpx client, the hosts the fal key may go to, and
the one loop every call goes through, which applies the written policy of ``retry.py`` (read its
docstring first) and logs each attempt.

The fal key goes only to the configured fal origins (queue, REST and any ``trusted_origins``):
stored URLs are checked before a request is made. Output and signed upload URLs get no key.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from app.metrics import FAL_REQUESTS, fal_outcome
from app.upstream.answers import error_fields
from app.upstream.errors import (
    AmbiguousSubmitError,
    PermanentUpstreamError,
    TransientUpstreamError,
    UploadNotReplayableError,
    UpstreamError,
    UpstreamUntrustedURLError,
)
from app.upstream.retry import (
    REQUEST_ID_HEADER,
    RetryPolicy,
    Uniform,
    Verdict,
    classify_call_exception,
    classify_call_response,
    classify_submit_exception,
    classify_submit_response,
    parse_retry_after,
    retryable_hint,
)
from app.upstream.streams import SourceAlreadyConsumed

log = structlog.get_logger("app.upstream")

DEFAULT_QUEUE_URL = "https://queue.fal.run"
DEFAULT_REST_URL = "https://rest.fal.ai"
DEFAULT_CDN_URL = "https://v3.fal.media"

Sleep = Callable[[float], Awaitable[Any]]


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


class FalTransport:
    """The fal hosts, the key, and the retry loop; shared by the queue and storage calls.
    ``FalClient`` builds it and holds the defaults. ``aclose()`` closes the httpx client only when
    it was created here (``http`` None)."""

    def __init__(
        self,
        key: str,
        *,
        queue_url: str,
        rest_url: str,
        cdn_url: str,
        trusted_origins: Iterable[str],
        http: httpx.AsyncClient | None,
        timeouts: FalTimeouts | None,
        submit_policy: RetryPolicy,
        call_policy: RetryPolicy,
        sleep: Sleep,
        uniform: Uniform,
    ) -> None:
        if not key:
            raise ValueError("a fal key is required")
        self._key = key
        self.queue_url = _base_url(queue_url)
        self.rest_url = _base_url(rest_url)
        self.cdn_url = _base_url(cdn_url)
        self._trusted = {_origin(self.queue_url), _origin(self.rest_url)} | {
            _origin(_base_url(url)) for url in trusted_origins
        }
        # Built last: a ValueError above must not leave a client nobody closes.
        self._owns_http = http is None
        self._http = http if http is not None else build_http_client(timeouts)
        self._submit_policy = submit_policy
        self._call_policy = call_policy
        self._sleep = sleep
        self._uniform = uniform

    def __repr__(self) -> str:  # never show the key
        return f"FalTransport(queue_url={self.queue_url!r})"

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Key {self._key}", "Accept": "application/json"}

    def trusted_url(self, url: str, operation: str) -> httpx.URL:
        parsed = httpx.URL(url)
        if _origin(url) not in self._trusted:
            raise UpstreamUntrustedURLError(
                f"{parsed.scheme}://{parsed.netloc.decode()} is not a configured fal host",
                operation=operation,
            )
        return parsed

    async def send(
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
        policy: RetryPolicy | None = None,
        read_timeout_s: float | None = None,
    ) -> httpx.Response:
        """One call under the retry policy. Returns the response to map (any status); raises for
        retries exhausted, ambiguous submits and unusable transport failures.

        ``policy`` replaces the submit or call policy; ``read_timeout_s`` the client's read
        timeout, for this call only."""
        is_submit = operation == "submit"
        if policy is None:
            policy = self._submit_policy if is_submit else self._call_policy
        timeout = (
            httpx.USE_CLIENT_DEFAULT if read_timeout_s is None else self._with_read(read_timeout_s)
        )
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
                    timeout=timeout,
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
                elapsed = time.perf_counter() - started
                latency_ms = round(elapsed * 1000, 1)
                failure = "timeout" if isinstance(exc, httpx.TimeoutException) else "transport"
                FAL_REQUESTS.labels(operation, failure + "_error").observe(elapsed)
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

            elapsed = time.perf_counter() - started
            latency_ms = round(elapsed * 1000, 1)
            FAL_REQUESTS.labels(operation, fal_outcome(response.status_code)).observe(elapsed)
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
                fal_request_id=request_id,
                attempt=attempt,
                latency_ms=latency_ms,
            )
            if verdict is Verdict.ANSWER:
                return response
            if stream:
                await response.aread()
                await response.aclose()
            if verdict is Verdict.AMBIGUOUS:
                _, _, error_type = error_fields(response)
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

    def _with_read(self, seconds: float) -> httpx.Timeout:
        current = self._http.timeout
        return httpx.Timeout(
            connect=current.connect, read=seconds, write=current.write, pool=current.pool
        )

    async def _pause(self, delay: float, operation: str, attempt: int) -> None:
        log.info("upstream.retry", operation=operation, attempt=attempt, delay_s=round(delay, 3))
        await self._sleep(delay)


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
