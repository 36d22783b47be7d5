"""Uploads and output downloads (``app/upstream/storage.py``) against a faked network edge
(httpx.MockTransport): bytes are streamed, never held whole, and the key goes only to fal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from app.upstream import OutputTooLargeError, OutputUnavailableError, UploadNotReplayableError
from tests.upstream.conftest import CDN, KEY, REST, MakeClient, Recorder, replies

# --- upload -----------------------------------------------------------------------------------


def token_reply() -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "token": "cdn-token",
            "token_type": "Bearer",
            "base_url": "https://real-cdn.example",
            "expires_at": "2999-01-01T00:00:00+00:00",
        },
    )


def routes(table: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]]):  # type: ignore[no-untyped-def]
    async def handler(request: httpx.Request) -> httpx.Response:
        key = (request.method, f"{request.url.scheme}://{request.url.host}{request.url.path}")
        if key not in table:
            return httpx.Response(599, text=f"unexpected {key}")
        return table[key](request)

    return handler


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(bytes(range(256)) * 1000)  # 256 KB
    return path


async def test_upload_uses_the_cdn_flow_streaming_the_file(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(
                    200, json={"access_url": "https://cdn.test/files/abc/clip.mp4"}
                ),
            }
        ),
        chunk_size=64 * 1024,
    )
    url = await client.upload_file(video, "video/mp4", "clip.mp4")
    assert url == "https://cdn.test/files/abc/clip.mp4"

    token_request, upload_request = recorder.requests
    assert token_request.url.params["storage_type"] == "fal-cdn-v3"
    assert token_request.headers["authorization"] == f"Key {KEY}"
    assert json.loads(recorder.bodies[0]) == {}
    assert upload_request.headers["authorization"] == "Bearer cdn-token"
    assert upload_request.headers["x-fal-file-name"] == "clip.mp4"
    assert upload_request.headers["content-type"] == "video/mp4"
    assert upload_request.headers["content-length"] == str(video.stat().st_size)
    assert recorder.bodies[1] == video.read_bytes()
    assert len(recorder.body_chunks[1]) == 4  # streamed in 64 KB chunks, never read whole


async def test_upload_token_is_reused_until_it_expires(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(
                    200, json={"access_url": "https://cdn.test/files/1"}
                ),
            }
        )
    )
    await client.upload_file(video, "video/mp4", "a.mp4")
    await client.upload_file(video, "video/mp4", "b.mp4")
    assert [r.url.path for r in recorder.requests] == [
        "/storage/auth/token",
        "/files/upload",
        "/files/upload",
    ]


async def test_upload_streams_an_async_iterable(
    make_client: MakeClient, recorder: Recorder
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(5):
            yield bytes([index]) * 1000

    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(
                    200, json={"access_url": "https://cdn.test/files/s"}
                ),
            }
        )
    )
    assert await client.upload_file(chunks(), "audio/mpeg", "a.mp3") == "https://cdn.test/files/s"
    assert recorder.body_chunks[1] == [bytes([i]) * 1000 for i in range(5)]
    assert recorder.requests[1].headers.get("transfer-encoding") == "chunked"


def initiate_routes(
    status_of_cdn: int,
) -> dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]]:
    return {
        ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
        ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(status_of_cdn),
        ("POST", f"{REST}/storage/upload/initiate"): lambda r: httpx.Response(
            200,
            json={
                "upload_url": "https://storage.test/bucket/x?X-Goog-Signature=sig",
                "file_url": "https://storage.test/files/x.mp4",
            },
        ),
        ("PUT", "https://storage.test/bucket/x"): lambda r: httpx.Response(200),
    }


@pytest.mark.parametrize("status", [404, 405])
async def test_upload_falls_back_to_initiate_and_put(
    make_client: MakeClient, recorder: Recorder, video: Path, status: int
) -> None:
    client = make_client(routes(initiate_routes(status)))
    url = await client.upload_file(video, "video/mp4", "clip.mp4")
    assert url == "https://storage.test/files/x.mp4"
    initiate, put = recorder.requests[-2:]
    assert initiate.headers["authorization"] == f"Key {KEY}"
    assert json.loads(recorder.bodies[-2]) == {"file_name": "clip.mp4", "content_type": "video/mp4"}
    assert "authorization" not in put.headers  # a signed URL never gets the fal key
    assert put.headers["content-type"] == "video/mp4"
    assert recorder.bodies[-1] == video.read_bytes()


async def test_upload_falls_back_when_the_token_endpoint_is_missing(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    table = initiate_routes(200)
    table[("POST", f"{REST}/storage/auth/token")] = lambda r: httpx.Response(404)
    url = await make_client(routes(table)).upload_file(video, "video/mp4", "clip.mp4")
    assert url == "https://storage.test/files/x.mp4"
    assert [r.url.path for r in recorder.requests] == [
        "/storage/auth/token",
        "/storage/upload/initiate",
        "/bucket/x",
    ]


async def test_upload_fallback_refuses_a_consumed_one_shot_stream(make_client: MakeClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"once"

    with pytest.raises(UploadNotReplayableError):
        await make_client(routes(initiate_routes(405))).upload_file(chunks(), "video/mp4", "c.mp4")


async def test_upload_refreshes_a_revoked_cdn_token_once(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    answers = iter([httpx.Response(401), httpx.Response(200, json={"access_url": "https://u"})])
    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: next(answers),
            }
        )
    )
    assert await client.upload_file(video, "video/mp4", "clip.mp4") == "https://u"
    assert [r.url.path for r in recorder.requests].count("/storage/auth/token") == 2


# --- download ---------------------------------------------------------------------------------


async def test_download_streams_to_a_path_without_credentials(
    make_client: MakeClient, recorder: Recorder, tmp_path: Path
) -> None:
    data = b"\x00\x01" * 50_000
    client = make_client(
        routes(
            {
                ("GET", "https://out.test/files/a.mp4"): lambda r: httpx.Response(
                    302, headers={"Location": "https://store.test/real/a.mp4"}
                ),
                ("GET", "https://store.test/real/a.mp4"): lambda r: httpx.Response(
                    200, content=data, headers={"Content-Type": "video/mp4"}
                ),
            }
        )
    )
    dest = tmp_path / "out" / "a.mp4"
    dest.parent.mkdir()
    size, content_type = await client.download(
        "https://out.test/files/a.mp4", dest, max_bytes=10**6
    )
    assert (size, content_type) == (len(data), "video/mp4")
    assert dest.read_bytes() == data
    assert not (tmp_path / "out" / "a.mp4.part").exists()
    assert all("authorization" not in r.headers for r in recorder.requests)


async def test_download_to_a_chunk_sink(make_client: MakeClient) -> None:
    received: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        received.append(chunk)

    client = make_client(
        replies(httpx.Response(200, content=b"abc", headers={"Content-Type": "audio/mpeg"}))
    )
    assert await client.download("https://out.test/a.mp3", sink, max_bytes=10) == (3, "audio/mpeg")
    assert b"".join(received) == b"abc"


async def test_download_refuses_a_declared_size_over_the_cap(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client(replies(httpx.Response(200, content=b"x" * 100)))
    with pytest.raises(OutputTooLargeError):
        await client.download("https://out.test/a", tmp_path / "a", max_bytes=99)
    assert list(tmp_path.iterdir()) == []


async def test_download_stops_a_stream_that_grows_past_the_cap(
    make_client: MakeClient, tmp_path: Path
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"y" * 1000

    client = make_client(replies(httpx.Response(200, content=endless())))  # no Content-Length
    with pytest.raises(OutputTooLargeError):
        await client.download("https://out.test/a", tmp_path / "a", max_bytes=5000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_download_of_an_expired_output(
    make_client: MakeClient, tmp_path: Path, status: int
) -> None:
    with pytest.raises(OutputUnavailableError) as caught:
        await make_client(replies(httpx.Response(status, text="gone"))).download(
            "https://out.test/a", tmp_path / "a", max_bytes=10
        )
    assert caught.value.code == "upstream_output_unavailable"
