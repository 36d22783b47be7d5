"""``SafeFetcher`` against a real HTTP(S) server on 127.0.0.1.

Names resolve through ``ScriptedResolver``; every request passes ``SpyTransport`` first, which
proves where the fetcher would connect (the URL it hands to httpx carries the vetted IP) and lets
nothing through to a non-loopback address. "Refused before connecting" is asserted as: the spy saw
no request for that hop and the local server saw no connection.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from app.netguard import (
    ContentTooLarge,
    CredentialsNotAllowed,
    DestinationNotAllowed,
    FetchFailed,
    FetchTimeout,
    OutboundPolicy,
    SafeFetcher,
    SchemeNotAllowed,
    TooManyRedirects,
)
from tests.netguard.conftest import (
    Handler,
    LocalServer,
    Pki,
    ScriptedResolver,
    Seen,
    SpyTransport,
    redirect_to,
    respond,
    serve_bytes,
    spy_client,
)
from tests.support.waiting import eventually

DATA = os.urandom(600_000)  # a few read chunks' worth
DATA_SHA256 = hashlib.sha256(DATA).hexdigest()

LOOPBACK = OutboundPolicy(
    max_bytes=1_000_000,
    allow_loopback=True,
    connect_timeout_s=2,
    read_timeout_s=2,
    total_timeout_s=10,
)
STRICT = OutboundPolicy(max_bytes=1_000_000, connect_timeout_s=2, read_timeout_s=2)


@asynccontextmanager
async def fetching(
    policy: OutboundPolicy, resolver: ScriptedResolver, **client_kwargs: object
) -> AsyncIterator[tuple[SafeFetcher, SpyTransport]]:
    client, spy = spy_client(**client_kwargs)  # type: ignore[arg-type]
    async with client, SafeFetcher(policy, resolver=resolver, http=client) as fetcher:
        yield fetcher, spy


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- handlers -----------------------------------------------------------------------------------


def headers_then_stall(content_length: int) -> Handler:
    """Headers promising a body, then nothing: reading the body would hit the read timeout."""

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {content_length}\r\n"
            "Content-Type: video/mp4\r\n\r\n".encode()
        )
        await writer.drain()
        await asyncio.sleep(30)  # the stall itself: the fetcher must give up long before

    return handler


def oversize_body(framing: str, size: int = 5_000, piece: int = 500) -> Handler:
    """``size`` bytes under a framing that does not announce it: chunked, chunked with a
    Content-Length that lies (Transfer-Encoding wins), or delimited by closing the connection."""

    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> None:
        head = ["HTTP/1.1 200 OK", "Connection: close", "Content-Type: video/mp4"]
        if framing in ("chunked", "lying"):
            head.append("Transfer-Encoding: chunked")
        if framing == "lying":
            head.append("Content-Length: 10")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        for _ in range(size // piece):
            data = b"z" * piece
            writer.write(f"{piece:x}\r\n".encode() + data + b"\r\n" if framing != "close" else data)
            await writer.drain()
        if framing != "close":
            writer.write(b"0\r\n\r\n")

    return handler


def trickle(total: int = 100_000, piece: int = 100, every_s: float = 0.05) -> Handler:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(
            f"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {total}\r\n\r\n".encode()
        )
        for _ in range(total // piece):
            writer.write(b"t" * piece)
            await writer.drain()
            await asyncio.sleep(every_s)  # the server's pace, what the total deadline must cut

    return handler


def status_only(status: int, headers: list[tuple[str, str]] | None = None) -> Handler:
    async def handler(seen: Seen, writer: asyncio.StreamWriter) -> None:
        await respond(writer, status, headers or [], b"error body")

    return handler


# --- downloads ----------------------------------------------------------------------------------


async def test_download_from_allowed_loopback_server_streams_and_hashes(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", serve_bytes(DATA))
    resolver.add("files.test", ["127.0.0.1"])
    url = server.url("files.test", "/v.mp4")

    async with fetching(LOOPBACK, resolver) as (fetcher, spy):
        result = await fetcher.download(url, tmp_path / "in.mp4")

    assert (result.status, result.size_bytes, result.sha256) == (200, len(DATA), DATA_SHA256)
    assert (result.final_url, result.redirects, result.address) == (url, 0, "127.0.0.1")
    assert result.content_type == "video/mp4"
    assert (tmp_path / "in.mp4").read_bytes() == DATA
    assert leftovers(tmp_path) == ["in.mp4"]
    # Resolved once, connected to the checked IP, the server still addressed by name.
    assert resolver.calls == ["files.test"]
    assert spy.hosts == ["127.0.0.1"]
    sent = server.seen[0].headers
    assert sent["host"] == f"files.test:{server.port}"
    assert sent["connection"] == "close"
    assert sent["accept-encoding"] == "identity"


async def test_fetcher_with_its_own_client_fetches_an_ip_literal_without_lookup(
    server: LocalServer, tmp_path: Path
) -> None:
    server.route("/v.mp4", serve_bytes(DATA))
    dest = tmp_path / "in.mp4"
    dest.write_bytes(b"stale")

    async def no_lookups(host: str, port: int) -> list[str]:
        raise AssertionError("an IP literal needs no lookup")

    async with SafeFetcher(LOOPBACK, resolver=no_lookups) as fetcher:
        result = await fetcher.download(f"{server.origin}/v.mp4", dest)

    assert result.sha256 == DATA_SHA256
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["in.mp4"]


async def test_injected_client_defaults_do_not_reach_the_tenant_server(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", serve_bytes(b"ok"))
    client, _ = spy_client()
    client.auth = httpx.BasicAuth("gateway", "secret")
    client.cookies.set("session", "gateway-session")
    client.headers["X-Internal"] = "1"
    async with client, SafeFetcher(LOOPBACK, resolver=resolver, http=client) as fetcher:
        await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "a")

    sent = server.seen[0].headers
    assert not {"authorization", "cookie", "x-internal"} & set(sent)


@pytest.mark.parametrize("host", ["127.0.0.1", "[::ffff:127.0.0.1]", "files.test", "v6.test"])
async def test_loopback_server_is_refused_when_loopback_is_not_allowed(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path, host: str
) -> None:
    server.route("/v.mp4", serve_bytes(DATA))
    resolver.add("files.test", ["127.0.0.1"])
    resolver.add("v6.test", ["::1"])

    async with fetching(STRICT, resolver) as (fetcher, spy):
        with pytest.raises(DestinationNotAllowed) as caught:
            await fetcher.download(server.url(host, "/v.mp4"), tmp_path / "in.mp4")

    assert caught.value.reason == "loopback"
    assert spy.requests == []
    assert server.connections == 0
    assert leftovers(tmp_path) == []


async def test_allowlisted_address_is_fetched_without_the_loopback_switch(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", serve_bytes(DATA))
    policy = OutboundPolicy(max_bytes=1_000_000, allowlist=("127.0.0.1/32",))
    async with fetching(policy, resolver) as (fetcher, _):
        result = await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in.mp4")
    assert result.sha256 == DATA_SHA256


async def test_name_resolving_to_public_and_private_is_refused_before_connecting(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    resolver.add("mixed.test", ["127.0.0.1", "10.0.0.1"])
    async with fetching(LOOPBACK, resolver) as (fetcher, spy):
        with pytest.raises(DestinationNotAllowed) as caught:
            await fetcher.download(server.url("mixed.test", "/v.mp4"), tmp_path / "in.mp4")
    assert (caught.value.ip, caught.value.reason) == ("10.0.0.1", "private")
    assert spy.requests == []
    assert server.connections == 0


# --- DNS rebinding ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_rebinding_name_is_resolved_once_and_the_checked_ip_is_used(
    resolver: ScriptedResolver, tmp_path: Path, scheme: str
) -> None:
    # The first answer is public, every later one private: a fetcher that resolved again (or let
    # httpx resolve the name) would connect to 10.0.0.1.
    resolver.add("cdn.example.com", ["93.184.215.14"], ["10.0.0.1"])

    def canned(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"public bytes", headers={"Content-Type": "video/mp4"})

    async with fetching(STRICT, resolver, canned=canned) as (fetcher, spy):
        result = await fetcher.download(f"{scheme}://cdn.example.com/v.mp4", tmp_path / "in")

    assert resolver.calls == ["cdn.example.com"]
    assert spy.hosts == ["93.184.215.14"]
    request = spy.requests[0]
    assert request.url.scheme == scheme
    assert request.headers["host"] == "cdn.example.com"
    if scheme == "https":
        assert request.extensions["sni_hostname"] == "cdn.example.com"
    assert (result.address, result.final_url) == (
        "93.184.215.14",
        f"{scheme}://cdn.example.com/v.mp4",
    )
    assert (tmp_path / "in").read_bytes() == b"public bytes"


async def test_rebinding_name_against_a_real_server_connects_to_the_checked_address(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", serve_bytes(DATA))
    resolver.add("rebind.test", ["127.0.0.1"], ["10.0.0.1"])
    async with fetching(LOOPBACK, resolver) as (fetcher, spy):
        result = await fetcher.download(server.url("rebind.test", "/v.mp4"), tmp_path / "in")
    assert result.sha256 == DATA_SHA256
    assert resolver.calls == ["rebind.test"]
    assert spy.hosts == ["127.0.0.1"]
    assert server.seen[0].headers["host"] == f"rebind.test:{server.port}"


async def test_each_redirect_hop_is_resolved_and_checked_again(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    resolver.add("rebind.test", ["127.0.0.1"], ["10.0.0.1"])
    server.route("/start", redirect_to(server.url("rebind.test", "/v.mp4")))
    async with fetching(LOOPBACK, resolver) as (fetcher, spy):
        with pytest.raises(DestinationNotAllowed) as caught:
            await fetcher.download(server.url("rebind.test", "/start"), tmp_path / "in")
    assert (caught.value.ip, caught.value.extra["redirect"]) == ("10.0.0.1", 1)
    assert resolver.calls == ["rebind.test", "rebind.test"]
    assert spy.hosts == ["127.0.0.1"]
    assert server.paths() == ["/start"]


# --- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("https://internal.test/admin", "private"),
        ("http://[fe80::1]/", "link_local"),
        ("http://100.64.0.1/", "cgnat"),
    ],
)
async def test_redirect_to_a_forbidden_destination_is_refused_at_the_hop(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path, location: str, reason: str
) -> None:
    resolver.add("internal.test", ["10.0.0.5"])
    server.route("/start", redirect_to(location))
    async with fetching(LOOPBACK, resolver) as (fetcher, spy):
        with pytest.raises(DestinationNotAllowed) as caught:
            await fetcher.download(f"{server.origin}/start", tmp_path / "in.mp4")
    assert caught.value.reason == reason
    assert caught.value.extra["redirect"] == 1
    assert caught.value.detail.startswith("redirect 1: ")
    assert spy.hosts == ["127.0.0.1"]  # only the allowed first hop was ever requested
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("location", "error"),
    [
        ("file:///etc/passwd", SchemeNotAllowed),
        ("gopher://127.0.0.1:6379/_INFO", SchemeNotAllowed),
        ("http://user:pw@127.0.0.1/", CredentialsNotAllowed),
    ],
)
async def test_redirect_to_a_refused_url_is_refused_at_the_hop(
    server: LocalServer,
    resolver: ScriptedResolver,
    tmp_path: Path,
    location: str,
    error: type[Exception],
) -> None:
    server.route("/start", redirect_to(location))
    async with fetching(LOOPBACK, resolver) as (fetcher, spy):
        with pytest.raises(error):
            await fetcher.download(f"{server.origin}/start", tmp_path / "in.mp4")
    assert len(spy.requests) == 1


async def test_redirect_loop_ends_with_too_many_redirects(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    resolver.add("loop.test", ["127.0.0.1"])
    server.route("/loop", redirect_to("/loop", status=307))
    policy = OutboundPolicy(max_bytes=1000, allow_loopback=True, max_redirects=3)
    async with fetching(policy, resolver) as (fetcher, _):
        with pytest.raises(TooManyRedirects) as caught:
            await fetcher.download(server.url("loop.test", "/loop"), tmp_path / "in")
    assert caught.value.code == "too_many_redirects"
    assert server.paths() == ["/loop"] * 4  # the URL given plus three redirects
    assert resolver.calls == ["loop.test"] * 4  # one lookup per hop
    assert leftovers(tmp_path) == []


async def test_redirect_chain_within_the_limit_is_followed_and_reported(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    resolver.add("files.test", ["127.0.0.1"])
    resolver.add("cdn.test", ["127.0.0.1"])
    server.route("/a", redirect_to("/b", status=301))
    server.route("/b", redirect_to(server.url("cdn.test", "/c/"), status=303))
    server.route("/c/", redirect_to("d", status=307))
    server.route("/c/d", redirect_to("/v.mp4", status=308))
    server.route("/v.mp4", serve_bytes(DATA))

    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        result = await fetcher.download(server.url("files.test", "/a"), tmp_path / "in")

    assert result.redirects == 4
    assert result.final_url == server.url("cdn.test", "/v.mp4")
    assert result.sha256 == DATA_SHA256
    assert [s.method for s in server.seen] == ["GET"] * 5
    assert [s.headers["host"].split(":")[0] for s in server.seen] == [
        "files.test",
        "files.test",
        "cdn.test",
        "cdn.test",
        "cdn.test",
    ]


# --- status, size and time caps -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("handler", "status", "retryable"),
    [
        (status_only(404), 404, False),
        (status_only(403), 403, False),
        (status_only(429), 429, True),
        (status_only(503), 503, True),
        (status_only(206, [("Content-Range", "bytes 0-1/10")]), 206, False),
        (status_only(302), 302, False),  # a redirect with no Location
    ],
)
async def test_error_status_fails_with_the_status(
    server: LocalServer,
    resolver: ScriptedResolver,
    tmp_path: Path,
    handler: Handler,
    status: int,
    retryable: bool,
) -> None:
    server.route("/v.mp4", handler)
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        with pytest.raises(FetchFailed) as caught:
            await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in")
    assert (caught.value.code, caught.value.status) == ("fetch_failed", status)
    assert caught.value.extra["status"] == status
    assert caught.value.retryable is retryable
    assert leftovers(tmp_path) == []


async def test_declared_length_over_the_cap_is_refused_before_the_body(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    # The body never comes: waiting for it would end in a read timeout, not ContentTooLarge.
    server.route("/big", headers_then_stall(content_length=5_000))
    policy = OutboundPolicy(max_bytes=1_000, allow_loopback=True, read_timeout_s=2)
    async with fetching(policy, resolver) as (fetcher, _):
        with pytest.raises(ContentTooLarge) as caught:
            await fetcher.download(f"{server.origin}/big", tmp_path / "in")
    assert (caught.value.declared, caught.value.limit) == (5_000, 1_000)
    assert caught.value.code == "content_too_large"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("framing", ["chunked", "lying", "close"])
async def test_body_past_the_cap_is_cut_off_whatever_the_headers_say(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path, framing: str
) -> None:
    server.route("/big", oversize_body(framing))
    policy = OutboundPolicy(max_bytes=1_000, allow_loopback=True)
    async with fetching(policy, resolver) as (fetcher, _):
        with pytest.raises(ContentTooLarge) as caught:
            await fetcher.download(f"{server.origin}/big", tmp_path / "in")
    assert caught.value.declared is None
    assert caught.value.received is not None and caught.value.received > 1_000
    assert leftovers(tmp_path) == []


async def test_body_exactly_at_the_cap_is_accepted(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", oversize_body("chunked", size=1_000))
    policy = OutboundPolicy(max_bytes=1_000, allow_loopback=True)
    async with fetching(policy, resolver) as (fetcher, _):
        result = await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in")
    assert result.size_bytes == 1_000


async def test_compressed_body_is_capped_on_its_decoded_size(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    # We ask for identity; a server that gzips anyway gets its bytes counted after decoding,
    # so 1 KB on the wire cannot become 1 MB on disk.
    bomb = gzip.compress(b"\0" * 1_000_000)

    async def gzipped(seen: Seen, writer: asyncio.StreamWriter) -> None:
        await respond(writer, 200, [("Content-Encoding", "gzip")], bomb)

    server.route("/v.mp4", gzipped)
    policy = OutboundPolicy(max_bytes=100_000, allow_loopback=True)
    async with fetching(policy, resolver) as (fetcher, _):
        with pytest.raises(ContentTooLarge) as caught:
            await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in")
    assert len(bomb) < 100_000 < (caught.value.received or 0)
    assert leftovers(tmp_path) == []


async def test_body_shorter_than_declared_fails_and_leaves_nothing(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    async def truncated(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n")
        writer.write(b"only this")

    server.route("/v.mp4", truncated)
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        with pytest.raises(FetchFailed) as caught:
            await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in")
    assert caught.value.status is None and caught.value.retryable
    assert leftovers(tmp_path) == []


async def test_server_slow_to_answer_hits_the_read_timeout(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    async def silent(seen: Seen, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)  # a server that never answers: the read timeout must fire

    server.route("/v.mp4", silent)
    policy = OutboundPolicy(max_bytes=1_000, allow_loopback=True, read_timeout_s=0.2)
    async with fetching(policy, resolver) as (fetcher, _):
        with pytest.raises(FetchTimeout) as caught:
            await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in")
    assert (caught.value.code, caught.value.phase) == ("fetch_timeout", "read")
    assert caught.value.retryable


async def test_trickling_body_hits_the_total_deadline_and_leaves_nothing(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    # Each read is quick (no read timeout), the whole would take 50 s.
    server.route("/v.mp4", trickle())
    policy = OutboundPolicy(
        max_bytes=1_000_000, allow_loopback=True, read_timeout_s=1, total_timeout_s=0.5
    )
    async with fetching(policy, resolver) as (fetcher, _):
        with pytest.raises(FetchTimeout) as caught:
            await fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in")
    assert caught.value.phase == "total"
    assert leftovers(tmp_path) == []


async def test_cancelled_download_leaves_nothing(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", trickle())
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        task = asyncio.create_task(fetcher.download(f"{server.origin}/v.mp4", tmp_path / "in"))
        # the temporary file, while streaming
        await eventually(lambda: len(leftovers(tmp_path)) == 1, what="the download to start")
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert leftovers(tmp_path) == []


async def test_small_body_is_kept_in_memory_and_writes_no_file(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", serve_bytes(DATA))
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        result = await fetcher.download(
            f"{server.origin}/v.mp4", tmp_path / "in", in_memory_max=len(DATA)
        )
    assert result.body == DATA
    assert (result.size_bytes, result.sha256) == (len(DATA), DATA_SHA256)
    assert leftovers(tmp_path) == []


async def test_body_declared_larger_than_memory_allows_goes_to_the_file(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/v.mp4", serve_bytes(DATA))
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        result = await fetcher.download(
            f"{server.origin}/v.mp4", tmp_path / "in", in_memory_max=len(DATA) - 1
        )
    assert result.body is None
    assert (tmp_path / "in").read_bytes() == DATA
    assert leftovers(tmp_path) == ["in"]


@pytest.mark.parametrize("framing", ["chunked", "close"])
async def test_undeclared_body_outgrowing_memory_spills_to_the_file_whole(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path, framing: str
) -> None:
    server.route("/v.mp4", oversize_body(framing, size=5_000))
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        result = await fetcher.download(
            f"{server.origin}/v.mp4", tmp_path / "in", in_memory_max=1_200
        )
    assert result.body is None and result.size_bytes == 5_000
    assert (tmp_path / "in").read_bytes() == b"z" * 5_000
    assert result.sha256 == hashlib.sha256(b"z" * 5_000).hexdigest()
    assert leftovers(tmp_path) == ["in"]


@pytest.mark.parametrize("framing", ["chunked", "close"])
async def test_the_cap_holds_for_a_body_in_memory(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path, framing: str
) -> None:
    server.route("/big", oversize_body(framing))
    policy = OutboundPolicy(max_bytes=1_000, allow_loopback=True)
    async with fetching(policy, resolver) as (fetcher, _):
        with pytest.raises(ContentTooLarge) as caught:
            await fetcher.download(f"{server.origin}/big", tmp_path / "in", in_memory_max=10_000)
    assert caught.value.received is not None and caught.value.received > 1_000
    assert leftovers(tmp_path) == []


async def test_empty_body_without_memory_still_makes_the_file(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/empty", serve_bytes(b""))
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        result = await fetcher.download(f"{server.origin}/empty", tmp_path / "in")
    assert result.body is None and result.size_bytes == 0
    assert (tmp_path / "in").read_bytes() == b""


# --- connecting ---------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_refused_connection_fails_retryably(
    resolver: ScriptedResolver, tmp_path: Path
) -> None:
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        with pytest.raises(FetchFailed) as caught:
            await fetcher.download(f"http://127.0.0.1:{closed_port()}/v", tmp_path / "in")
    assert caught.value.status is None and caught.value.retryable


async def test_next_vetted_address_is_tried_when_a_connect_fails(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    # The server listens on 127.0.0.1 only, so [::1]:port refuses (or IPv6 is off): either way
    # the second checked address is used, and no other.
    server.route("/v.mp4", serve_bytes(DATA))
    resolver.add("dual.test", ["::1", "127.0.0.1"])
    async with fetching(LOOPBACK, resolver) as (fetcher, spy):
        result = await fetcher.download(server.url("dual.test", "/v.mp4"), tmp_path / "in")
    assert spy.hosts == ["::1", "127.0.0.1"]
    assert result.address == "127.0.0.1"


# --- HTTPS --------------------------------------------------------------------------------------


async def test_https_to_a_pinned_ip_verifies_the_certificate_for_the_hostname(
    pki: Pki, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server = LocalServer(tls=pki.server_context("media.test"))
    await server.start()
    try:
        server.route("/v.mp4", serve_bytes(DATA))
        resolver.add("media.test", ["127.0.0.1"])
        async with fetching(LOOPBACK, resolver, verify=pki.client_context()) as (fetcher, spy):
            result = await fetcher.download(server.url("media.test", "/v.mp4"), tmp_path / "in")
    finally:
        await server.stop()
    assert result.sha256 == DATA_SHA256
    assert spy.hosts == ["127.0.0.1"]
    assert server.sni_names == ["media.test"]
    assert server.seen[0].headers["host"] == f"media.test:{server.port}"


async def test_https_certificate_for_another_name_is_rejected(
    pki: Pki, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    # Same CA, same pinned IP, but the certificate names other.test: the check is against the
    # name in the URL, not the address we connected to.
    server = LocalServer(tls=pki.server_context("other.test"))
    await server.start()
    try:
        server.route("/v.mp4", serve_bytes(DATA))
        resolver.add("media.test", ["127.0.0.1"])
        async with fetching(LOOPBACK, resolver, verify=pki.client_context()) as (fetcher, _):
            with pytest.raises(FetchFailed) as caught:
                await fetcher.download(server.url("media.test", "/v.mp4"), tmp_path / "in")
    finally:
        await server.stop()
    assert "CERTIFICATE_VERIFY_FAILED" in caught.value.detail
    assert server.seen == []  # no HTTP request was sent over the unverified connection
    assert leftovers(tmp_path) == []


# --- headers only -------------------------------------------------------------------------------


async def test_head_follows_redirects_and_reports_the_headers(
    server: LocalServer, resolver: ScriptedResolver, tmp_path: Path
) -> None:
    server.route("/start", redirect_to("/v.mp4"))
    server.route("/v.mp4", serve_bytes(DATA))
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        result = await fetcher.head(f"{server.origin}/start")
    assert (result.status, result.content_length, result.content_type) == (
        200,
        len(DATA),
        "video/mp4",
    )
    assert result.redirects == 1
    assert result.final_url == f"{server.origin}/v.mp4"
    assert [s.method for s in server.seen] == ["HEAD", "HEAD"]


async def test_probe_headers_does_not_read_the_body(
    server: LocalServer, resolver: ScriptedResolver
) -> None:
    # The body never arrives; reading it would take the 2 s read timeout.
    server.route("/v.mp4", headers_then_stall(content_length=123_456))
    async with fetching(LOOPBACK, resolver) as (fetcher, _):
        result = await asyncio.wait_for(fetcher.probe_headers(f"{server.origin}/v.mp4"), 1.0)
    assert (result.content_length, server.seen[0].method) == (123_456, "GET")


async def test_head_refuses_forbidden_destinations_too(resolver: ScriptedResolver) -> None:
    async with fetching(STRICT, resolver) as (fetcher, spy):
        with pytest.raises(DestinationNotAllowed):
            await fetcher.head("http://169.254.169.254/latest/meta-data/")
    assert spy.requests == []


# --- kept-alive connections (a fetcher with no client of its own) -------------------------------


class KeepAliveServer:
    """An HTTP/1.1 server on 127.0.0.1 that keeps connections open: it records each request with
    the connection it came on, and drops (closes unanswered) the requests ``drop`` says."""

    def __init__(self, drop: Callable[[int, int], bool] = lambda _conn, _nth: False) -> None:
        self.drop = drop
        self.requests: list[tuple[int, str, dict[str, str]]] = []  # (connection, host, headers)
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> KeepAliveServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # the kept connections: wait_closed waits for them
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        connection, nth = self.connections, 0
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in head[1:] if line)
                }
                nth += 1
                self.requests.append((connection, headers["host"].split(":")[0], headers))
                if self.drop(connection, nth):
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(DATA) + DATA)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_a_names_connection_is_kept_for_its_next_fetch_and_never_lent_to_another_name(
    resolver: ScriptedResolver, tmp_path: Path
) -> None:
    # Both names resolve to the same address: a pool keyed by the address alone would send the
    # second name's request on the first name's connection (opened, under TLS checked, for it).
    resolver.add("files.test", ["127.0.0.1"])
    resolver.add("other.test", ["127.0.0.1"])
    async with KeepAliveServer() as srv:
        fetcher = SafeFetcher(LOOPBACK, resolver=resolver)
        for name in ("files.test", "files.test", "other.test", "files.test"):
            result = await fetcher.download(f"http://{name}:{srv.port}/v.mp4", tmp_path / "v")
            assert result.sha256 == DATA_SHA256
    assert [(c, host) for c, host, _ in srv.requests] == [
        (1, "files.test"),
        (1, "files.test"),
        (2, "other.test"),
        (1, "files.test"),
    ]
    assert all("connection" not in headers for _, _, headers in srv.requests)
    assert resolver.calls == ["files.test", "files.test", "other.test", "files.test"]  # each vetted


async def test_a_kept_connection_the_server_dropped_is_replaced_and_the_fetch_succeeds(
    resolver: ScriptedResolver, tmp_path: Path
) -> None:
    # The second request on the first connection is read and never answered (the server closed
    # it just then): sent once more, on a new connection.
    resolver.add("files.test", ["127.0.0.1"])
    async with KeepAliveServer(drop=lambda conn, nth: (conn, nth) == (1, 2)) as srv:
        fetcher = SafeFetcher(LOOPBACK, resolver=resolver)
        for _ in range(2):
            result = await fetcher.download(f"http://files.test:{srv.port}/v.mp4", tmp_path / "v")
            assert (result.status, result.sha256) == (200, DATA_SHA256)
    assert [c for c, _, _ in srv.requests] == [1, 1, 2]


async def test_a_fetcher_with_an_injected_client_keeps_no_connection(
    resolver: ScriptedResolver, tmp_path: Path
) -> None:
    resolver.add("files.test", ["127.0.0.1"])
    async with KeepAliveServer() as srv, fetching(LOOPBACK, resolver) as (fetcher, _):
        for _ in range(2):
            await fetcher.download(f"http://files.test:{srv.port}/v.mp4", tmp_path / "v")
    assert [(c, h["connection"]) for c, _, h in srv.requests] == [(1, "close"), (2, "close")]
