"""fal's storage: uploading inputs (CDN token + upload, or the initiate + signed PUT fallback) and
downloading output files, streamed both ways so a video is never held in memory whole.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog

from app.upstream.answers import (
    json_or_none,
    permanent,
    protocol_error,
    raise_account_errors,
    raise_read_failure,
)
from app.upstream.errors import (
    OutputTooLargeError,
    OutputUnavailableError,
    TransientUpstreamError,
    UpstreamProtocolError,
)
from app.upstream.schemas import Downloaded
from app.upstream.streams import ByteSource, ChunkSink, FileWriter, UploadBody
from app.upstream.transport import FalTransport

log = structlog.get_logger("app.upstream")

# Refresh a CDN token this long before fal says it expires, so an upload never starts on a token
# that dies mid-body.
CDN_TOKEN_MARGIN = timedelta(seconds=60)


@dataclass(slots=True)
class _CdnToken:
    header: str  # "{token_type} {token}"
    expires_at: datetime | None


class _FallbackToInitiate(Exception):
    """The CDN flow is not available here (404/405): use initiate + PUT."""


class CdnTokens:
    """The CDN upload token, fetched once and shared by concurrent uploads until near expiry."""

    def __init__(self, transport: FalTransport) -> None:
        self._transport = transport
        self._token: _CdnToken | None = None
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        self._token = None

    async def get(self) -> _CdnToken:
        async with self._lock:
            token = self._token
            now = datetime.now(UTC)
            if token is not None and (
                token.expires_at is None or token.expires_at - CDN_TOKEN_MARGIN > now
            ):
                return token
            transport = self._transport
            url = httpx.URL(f"{transport.rest_url}/storage/auth/token").copy_merge_params(
                {"storage_type": "fal-cdn-v3"}
            )
            response = await transport.send(
                "upload_token", "POST", url, headers=transport.auth_headers(), json={}
            )
            if response.status_code in (404, 405):
                raise _FallbackToInitiate
            raise_account_errors(response, "upload_token")
            if not response.is_success:
                raise_read_failure("upload_token", response)
            data = json_or_none(response)
            if not isinstance(data, dict) or not data.get("token") or not data.get("token_type"):
                raise protocol_error("upload_token", response, "no token in the answer")
            expires_at = _parse_datetime(data.get("expires_at"))
            token = _CdnToken(header=f"{data['token_type']} {data['token']}", expires_at=expires_at)
            # An unreadable expiry is not cached: a fresh token per upload is slower, not wrong.
            self._token = token if expires_at is not None else None
            return token


class StorageOperations:
    """The storage calls of ``FalClient``, which provides the attributes annotated here."""

    _transport: FalTransport
    _cdn_tokens: CdnTokens
    _chunk_size: int

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
        response = await self._transport.send(
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
                    raise permanent(
                        OutputUnavailableError, "download", response, "output file is gone"
                    )
                raise_read_failure("download", response)
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

    async def _upload_cdn(
        self, body: UploadBody, content_type: str, file_name: str, size: int | None
    ) -> str:
        for round_ in (1, 2):
            token = await self._cdn_tokens.get()
            headers = {
                "Authorization": token.header,
                "Content-Type": content_type,
                "X-Fal-File-Name": file_name,
                "Accept": "application/json",
            }
            if size is not None:
                headers["Content-Length"] = str(size)
            response = await self._transport.send(
                "upload",
                "POST",
                httpx.URL(f"{self._transport.cdn_url}/files/upload"),
                headers=headers,
                content=_content_factory(body),
            )
            if response.status_code in (404, 405):
                raise _FallbackToInitiate
            if response.status_code == 401 and round_ == 1:
                # A token fal revoked before its expiry: fetch a fresh one once.
                self._cdn_tokens.forget()
                continue
            return _access_url(response, "upload", key="access_url")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _upload_initiate(
        self, body: UploadBody, content_type: str, file_name: str, size: int | None
    ) -> str:
        url = httpx.URL(f"{self._transport.rest_url}/storage/upload/initiate").copy_merge_params(
            {"storage_type": "gcs"}
        )
        response = await self._transport.send(
            "upload_initiate",
            "POST",
            url,
            headers=self._transport.auth_headers(),
            json={"file_name": file_name, "content_type": content_type},
        )
        raise_account_errors(response, "upload_initiate")
        if not response.is_success:
            raise_read_failure("upload_initiate", response)
        answer = json_or_none(response)
        upload_url = answer.get("upload_url") if isinstance(answer, dict) else None
        file_url = answer.get("file_url") if isinstance(answer, dict) else None
        if not isinstance(upload_url, str) or not isinstance(file_url, str):
            raise protocol_error("upload_initiate", response, "no upload_url/file_url")
        headers = {"Content-Type": content_type}
        if size is not None:
            headers["Content-Length"] = str(size)
        # A signed URL: it authorises the PUT by itself; the fal key is not sent to it.
        put = await self._transport.send(
            "upload_put",
            "PUT",
            httpx.URL(upload_url),
            headers=headers,
            content=_content_factory(body),
        )
        if not put.is_success:
            raise_read_failure("upload_put", put)
        return file_url


def _access_url(response: httpx.Response, operation: str, *, key: str) -> str:
    raise_account_errors(response, operation)
    if not response.is_success:
        raise_read_failure(operation, response)
    data = json_or_none(response)
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise protocol_error(operation, response, f"no {key} in the answer")
    return value


def _content_factory(body: UploadBody) -> Callable[[], AsyncIterator[bytes]]:
    return body.stream


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
