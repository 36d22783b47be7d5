"""fal's status stream: a request's statuses pushed as server-sent events while it is queued and
running, the live alternative to polling ``status()``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.upstream.answers import MAX_ERROR_TEXT, protocol_error
from app.upstream.errors import TransientUpstreamError, UpstreamError, UpstreamProtocolError
from app.upstream.queue import raise_status_failure, read_status
from app.upstream.retry import REQUEST_ID_HEADER, STREAM_POLICY
from app.upstream.schemas import QueueStatus
from app.upstream.sse import EventDataDecoder, EventTooLarge
from app.upstream.transport import FalTransport

# fal sends a keep-alive comment every 15 s on a status stream: twice that without a byte means
# the stream is dead, not quiet.
STREAM_MAX_SILENCE_S = 30.0


class StatusStreamOperations:
    """The status stream of ``FalClient``, which provides ``_transport``."""

    _transport: FalTransport

    @asynccontextmanager
    async def status_stream(
        self, status_url: str, *, logs: bool = True, max_silence_s: float = STREAM_MAX_SILENCE_S
    ) -> AsyncIterator[AsyncIterator[QueueStatus]]:
        """Follow a request live: fal pushes each change (queue position, new log lines, the
        completion) as it happens, so the caller learns it within a second without polling::

            async with fal.status_stream(submitted.status_url) as statuses:
                async for status in statuses:
                    ...

        The statuses are those ``status()`` returns; the iteration ends after the COMPLETED one.
        The URL is ``status_url`` with ``/stream`` appended to its path (its query is kept).

        Entering opens the stream and raises as ``status()`` does: 401/403 as auth errors, 404
        ``UpstreamNotFoundError``, a connect error, 5xx or ingress error
        ``TransientUpstreamError``. Leaving the block closes the connection however it is left:
        an early ``break``, an exception, a cancellation (a context manager, because a bare async
        generator left by ``break`` is closed only when the garbage collector gets to it).

        Nothing is retried here. A stream that breaks off, sends nothing (not even fal's 15 s
        keep-alive) for ``max_silence_s`` or ends before COMPLETED raises
        ``TransientUpstreamError``: the caller decides whether to reconnect or to poll.
        """
        url = self._transport.trusted_url(_stream_url(status_url), "status_stream")
        url = url.copy_merge_params({"logs": "1" if logs else "0"})
        headers = {**self._transport.auth_headers(), "Accept": "text/event-stream"}
        response = await self._transport.send(
            "status_stream",
            "GET",
            url,
            headers=headers,
            stream=True,
            policy=STREAM_POLICY,
            read_timeout_s=max_silence_s,
        )
        try:
            content_type = response.headers.get("content-type", "")
            if response.status_code != 200 or not content_type.startswith("text/event-stream"):
                try:
                    await response.aread()
                except httpx.HTTPError as exc:
                    raise _stream_error(exc, response, max_silence_s) from exc
                if response.is_success:
                    raise protocol_error("status_stream", response, "not an event stream")
                raise_status_failure("status_stream", response)
            yield _statuses(response, max_silence_s)
        finally:
            await response.aclose()


async def _statuses(response: httpx.Response, max_silence_s: float) -> AsyncIterator[QueueStatus]:
    header_id = response.headers.get(REQUEST_ID_HEADER)
    decoder = EventDataDecoder()
    try:
        async for chunk in response.aiter_bytes():
            for data in decoder.feed(chunk):
                if not data.strip():
                    continue  # an event without data carries no status
                status = _event_status(data, header_id)
                yield status
                if status.completed:
                    return
    except httpx.HTTPError as exc:
        raise _stream_error(exc, response, max_silence_s) from exc
    except EventTooLarge as exc:
        raise UpstreamProtocolError(
            f"status stream: {exc}", operation="status_stream", request_id=header_id
        ) from exc
    raise TransientUpstreamError(
        "status stream ended before the request completed",
        operation="status_stream",
        request_id=header_id,
        status_code=response.status_code,
    )


def _event_status(data: str, header_id: str | None) -> QueueStatus:
    try:
        body = json.loads(data)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return read_status(body, header_id)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise UpstreamProtocolError(
            f"unreadable status event: {exc}",
            operation="status_stream",
            request_id=header_id,
            status_code=200,
            body=data[:MAX_ERROR_TEXT],
        ) from exc


def _stream_url(status_url: str) -> str:
    # String surgery on the path alone: re-encoding the URL could alter an opaque id or a query.
    parts = urlsplit(status_url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/stream"))


def _stream_error(
    exc: httpx.HTTPError, response: httpx.Response, silence_s: float
) -> UpstreamError:
    request_id = response.headers.get(REQUEST_ID_HEADER)
    if isinstance(exc, httpx.ReadTimeout):
        message = f"status stream silent for {silence_s} s"
    elif isinstance(exc, httpx.TransportError):
        message = f"status stream broke off: {type(exc).__name__}"
    else:  # e.g. a Content-Encoding that does not decode
        return UpstreamProtocolError(
            f"status stream unreadable: {type(exc).__name__}: {exc}",
            operation="status_stream",
            request_id=request_id,
        )
    return TransientUpstreamError(message, operation="status_stream", request_id=request_id)
