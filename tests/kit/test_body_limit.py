"""Request bodies are refused past their limit while they arrive (app.kit.body_limit)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from app.kit.body_limit import BodyLimitMiddleware
from app.main import create_app
from tests.conftest import TenantCreds
from tests.support.serve import serving

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

    limited = BodyLimitMiddleware(
        app, default_limit=1024, limits={("POST", "/v1/files"): (4 * 1024, "upload_too_large")}
    )
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.post("/v1/files", content=b"x" * 3000)).status_code == 201
        assert (await client.post("/v1/jobs", content=b"x" * 3000)).status_code == 413
        r = await client.post("/v1/files", content=Dribble(8192).__aiter__())
        assert r.status_code == 413
        assert r.json()["code"] == "upload_too_large"  # as the endpoint's own refusal reads
    assert seen == [3000]


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


def reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM) to the current one.
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_growth(since: int) -> int:
    """How far the resident set rose above `since` at its peak: a body read whole and freed
    again leaves the current RSS as it was, not the peak."""
    return _status("VmHWM") - since


async def send_chunked(base_url: str, path: str, total: int) -> tuple[bytes, int]:
    """A raw HTTP/1.1 client: a chunked body of `total` bytes, sent until the server answers.
    Returns the answer and how many body bytes went out before it."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    chunk = f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n"
    sent = 0
    answer = asyncio.ensure_future(reader.read(65536))
    try:
        while sent < total and not answer.done():
            writer.write(chunk)
            sent += CHUNK
            await writer.drain()
        if not answer.done():
            writer.write(b"0\r\n\r\n")  # the whole body: a server that reads it all answers
            await writer.drain()
    except ConnectionError:
        pass  # the server closed the connection after answering: that is the point
    try:
        return await asyncio.wait_for(answer, 30), sent
    finally:
        writer.close()


async def test_a_rejected_body_does_not_grow_the_servers_memory(
    settings: Settings, engine: AsyncEngine
) -> None:
    total = 50 * MiB
    async with serving(create_app(settings, engine=engine)) as base_url:
        await send_chunked(base_url, "/v1/webhooks/fal", 2 * MiB)  # warm up the path
        reset_peak_rss()
        before = _status("VmRSS")
        head, sent = await send_chunked(base_url, "/v1/webhooks/fal", total)
        grown = peak_rss_growth(before)
    assert head.startswith(b"HTTP/1.1 413 "), head[:200]
    assert b"request_too_large" in head
    # The server (this process) held at most about the limit, not the 50 MiB sent at it.
    assert grown < 8 * MiB, f"the peak RSS grew by {grown / MiB:.1f} MiB"
    assert sent < total
