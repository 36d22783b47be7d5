"""Request bodies are refused past their limit while they arrive (app.kit.body_limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from app.kit.body_limit import BodyLimitMiddleware
from tests.conftest import TenantCreds

MiB = 1024 * 1024
CHUNK = 64 * 1024


class Dribble:
    """A chunked body of `total` bytes that counts how much of it the server pulled."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"x" * CHUNK
        while self.sent < self.total:
            self.sent += CHUNK
            yield chunk


async def test_a_huge_webhook_body_is_refused_after_reading_only_the_limit(
    api: httpx.AsyncClient,
) -> None:
    body = Dribble(50 * MiB)
    r = await api.post("/v1/webhooks/fal", content=body.__aiter__())
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == "request_too_large"
    assert problem["request_id"] == r.headers["x-request-id"]
    assert r.headers["connection"] == "close"
    # Memory held by a rejected body is bounded by the limit, not by what the client sends.
    limit = api.app.state.settings.max_request_bytes  # type: ignore[attr-defined]
    assert body.sent <= limit + 2 * CHUNK
    assert body.sent < body.total / 40


async def test_an_announced_length_past_the_limit_is_refused_unread(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    big = {"model": "thinksound", "input": {}, "metadata": {"k": "v" * (2 * MiB)}}
    r = await api.post("/v1/jobs", json=big, headers=tenant.headers)
    assert r.status_code == 413
    assert r.json()["code"] == "request_too_large"


async def test_bodies_within_the_limit_pass_untouched(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    # Chunked and under the limit: counted, then handled as usual (here: an invalid input).
    async def small() -> AsyncIterator[bytes]:
        yield b'{"model": "thinksound",'
        yield b' "input": {"prompt": "rain"}}'

    r = await api.post("/v1/jobs", content=small(), headers=tenant.headers)
    assert r.status_code == 422
    assert r.json()["param"] == "input"


async def test_an_upload_route_has_its_own_limit() -> None:
    seen: list[int] = []

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen.append(total)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limited = BodyLimitMiddleware(app, default_limit=1024, limits={("POST", "/v1/files"): 4 * 1024})
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/v1/files", content=b"x" * 3000)).status_code == 201
        assert (await client.post("/v1/jobs", content=b"x" * 3000)).status_code == 413
        r = await client.post("/v1/files", content=Dribble(8192).__aiter__())
        assert r.status_code == 413
    assert seen == [3000]
