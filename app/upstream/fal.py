"""The fal client the worker uses: submit, status, result, cancel, upload, download.

One ``FalClient`` (and one ``httpx.AsyncClient`` under it) per process. It is assembled from one
module per concern, so each can be read alone:

- ``transport``: the httpx client, the hosts the key may go to, the retry loop (``retry.py``);
- ``answers``: what an error answer from fal means, whichever call received it;
- ``queue``: the queue protocol and its answers as ``schemas`` values;
- ``status_stream``: a request's statuses pushed live (``sse`` decodes the event stream);
- ``storage``: uploads and output downloads.

Nothing here knows about jobs, tenants or the database; configuration comes in as arguments.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import httpx

from app.upstream.queue import QueueOperations
from app.upstream.retry import CALL_POLICY, SUBMIT_POLICY, RetryPolicy, Uniform
from app.upstream.status_stream import StatusStreamOperations
from app.upstream.storage import CdnTokens, StorageOperations
from app.upstream.streams import DEFAULT_CHUNK_SIZE
from app.upstream.transport import (
    DEFAULT_CDN_URL,
    DEFAULT_QUEUE_URL,
    DEFAULT_REST_URL,
    FalTimeouts,
    FalTransport,
    Sleep,
    build_http_client,
)

__all__ = [
    "DEFAULT_CDN_URL",
    "DEFAULT_QUEUE_URL",
    "DEFAULT_REST_URL",
    "FalClient",
    "FalTimeouts",
    "build_http_client",
]


# The calls live in one class per concern sharing this object's transport, the way redis-py
# assembles its client from command mixins: callers keep one object, readers get small modules.
class FalClient(QueueOperations, StatusStreamOperations, StorageOperations):
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
        self._transport = FalTransport(
            key,
            queue_url=queue_url,
            rest_url=rest_url,
            cdn_url=cdn_url,
            trusted_origins=trusted_origins,
            http=http,
            timeouts=timeouts,
            submit_policy=submit_policy,
            call_policy=call_policy,
            sleep=sleep,
            uniform=uniform,
        )
        self._cdn_tokens = CdnTokens(self._transport)
        self._chunk_size = chunk_size

    def __repr__(self) -> str:  # never show the key
        return f"FalClient(queue_url={self._transport.queue_url!r})"

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> FalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
