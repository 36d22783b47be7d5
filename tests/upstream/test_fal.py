"""``FalClient`` as one object: what it owns, what it leaves to the caller, what it never shows.
Its calls are tested beside their modules: test_transport, test_queue, test_storage."""

from __future__ import annotations

import httpx

from app.upstream import FalClient
from tests.upstream.conftest import CDN, KEY, QUEUE, REST


async def test_an_injected_http_client_is_left_open_and_the_key_never_shown() -> None:
    async with httpx.AsyncClient() as http:
        client = FalClient(KEY, queue_url=QUEUE, rest_url=REST, cdn_url=CDN, http=http)
        assert KEY not in repr(client)
        await client.aclose()
        assert not http.is_closed


async def test_a_client_created_inside_is_closed_with_the_fal_client() -> None:
    async with FalClient(KEY, queue_url=QUEUE, rest_url=REST, cdn_url=CDN) as client:
        assert KEY not in repr(client)
