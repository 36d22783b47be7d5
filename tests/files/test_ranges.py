from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request, Response

from app.files.ranges import (
    ByteRange,
    RangeNotSatisfiableError,
    content_disposition,
    parse_range,
    stream_stored_object,
)
from app.storage import LocalStorage

SIZE = 1000
UNSATISFIABLE = RangeNotSatisfiableError


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, SIZE, None),
        ("bytes=0-0", SIZE, ByteRange(0, 0)),
        ("bytes=0-499", SIZE, ByteRange(0, 499)),
        ("bytes=500-", SIZE, ByteRange(500, 999)),
        ("bytes=-200", SIZE, ByteRange(800, 999)),
        ("bytes=999-999", SIZE, ByteRange(999, 999)),
        ("bytes=900-5000", SIZE, ByteRange(900, 999)),  # end past the end: clipped
        ("bytes=-5000", SIZE, ByteRange(0, 999)),  # suffix longer than the object: all of it
        ("BYTES=1-2", SIZE, ByteRange(1, 2)),  # range units are case-insensitive
        ("bytes= 1-2 ", SIZE, ByteRange(1, 2)),
        ("bytes=1-2,", SIZE, ByteRange(1, 2)),  # empty list elements are ignored
        ("bytes=1000-", SIZE, UNSATISFIABLE),  # start == size
        ("bytes=1000-1001", SIZE, UNSATISFIABLE),
        ("bytes=5000-", SIZE, UNSATISFIABLE),
        ("bytes=-0", SIZE, UNSATISFIABLE),
        ("bytes=0-", 0, UNSATISFIABLE),  # nothing to send from an empty object
        ("bytes=-5", 0, None),  # a suffix of nothing: send the (empty) whole
        ("bytes=5-1", SIZE, None),  # last < first: invalid, ignored
        ("bytes=0-1,5-6", SIZE, None),  # several ranges: ignored
        ("bytes=-", SIZE, None),
        ("bytes=", SIZE, None),
        ("bytes=a-b", SIZE, None),
        ("bytes=-1-2", SIZE, None),
        ("bytes=1 - 2", SIZE, None),
        ("bytes=+1-2", SIZE, None),
        ("bytes=\u0661-2", SIZE, None),  # an Arabic-Indic "1": only ASCII digits count
        ("items=0-1", SIZE, None),
        ("bytes 0-1", SIZE, None),
        ("", SIZE, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: object) -> None:
    if expected is UNSATISFIABLE:
        with pytest.raises(RangeNotSatisfiableError):
            parse_range(header, size)
    else:
        assert parse_range(header, size) == expected


def test_byte_range_length_is_inclusive() -> None:
    assert ByteRange(0, 0).length == 1
    assert ByteRange(10, 19).length == 10


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("audio.m4a", 'attachment; filename="audio.m4a"'),
        ("../../etc/passwd", 'attachment; filename="passwd"'),
        ("C:\\Users\\x\\clip.mp4", 'attachment; filename="clip.mp4"'),
        (
            'a"b\r\nSet-Cookie: x.mp4',
            'attachment; filename="abSet-Cookie_ x.mp4"; '
            "filename*=UTF-8''abSet-Cookie%3A%20x.mp4",
        ),
        ("café.mp4", "attachment; filename=\"cafe.mp4\"; filename*=UTF-8''caf%C3%A9.mp4"),
        ("..", 'attachment; filename="download"'),
    ],
)
def test_content_disposition_filename_is_safe(filename: str, expected: str) -> None:
    assert content_disposition("attachment", filename) == expected


DATA = os.urandom(150_000)  # more than two 64 KiB chunks
ETAG = f'"{hashlib.sha256(DATA).hexdigest()}"'


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    storage = LocalStorage(tmp_path)
    await storage.put_stream("clips/video.mp4", _once(DATA), content_type="video/mp4")
    app = FastAPI()

    @app.api_route("/files/{key:path}", methods=["GET", "HEAD"])
    async def serve(key: str, request: Request) -> Response:
        obj = await storage.stat(key)
        if obj is None:
            raise HTTPException(404)
        return await stream_stored_object(
            storage, obj, request.headers, method=request.method, filename="vidéo.mp4"
        )

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


URL = "/files/clips/video.mp4"


async def test_get_without_range_sends_everything(client: httpx.AsyncClient) -> None:
    r = await client.get(URL)

    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == ETAG
    assert r.headers["content-disposition"] == (
        "inline; filename=\"video.mp4\"; filename*=UTF-8''vid%C3%A9o.mp4"
    )
    assert "content-range" not in r.headers


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=60000-140000", 60000, 140000),  # across chunk boundaries
        ("bytes=149990-", 149990, 149999),
        ("bytes=-10", 149990, 149999),
        ("bytes=100-999999", 100, 149999),
    ],
)
async def test_single_range_gets_206(
    client: httpx.AsyncClient, range_header: str, start: int, end: int
) -> None:
    r = await client.get(URL, headers={"Range": range_header})

    assert r.status_code == 206
    assert r.content == DATA[start : end + 1]
    assert r.headers["content-range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.headers["content-length"] == str(end - start + 1)
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["etag"] == ETAG


async def test_unsatisfiable_range_gets_416(client: httpx.AsyncClient) -> None:
    r = await client.get(URL, headers={"Range": f"bytes={len(DATA)}-"})

    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{len(DATA)}"
    assert r.content == b""


@pytest.mark.parametrize("range_header", ["bytes=0-1,10-20", "bytes=9-1", "lines=1-2", "junk"])
async def test_ignored_range_gets_the_whole_object(
    client: httpx.AsyncClient, range_header: str
) -> None:
    r = await client.get(URL, headers={"Range": range_header})

    assert r.status_code == 200
    assert r.content == DATA


@pytest.mark.parametrize("if_none_match", [ETAG, f"W/{ETAG}", f'"other", {ETAG}', "*"])
async def test_matching_if_none_match_gets_304(
    client: httpx.AsyncClient, if_none_match: str
) -> None:
    r = await client.get(URL, headers={"If-None-Match": if_none_match, "Range": "bytes=0-1"})

    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == ETAG


async def test_stale_if_none_match_gets_the_object(client: httpx.AsyncClient) -> None:
    r = await client.get(URL, headers={"If-None-Match": '"stale"'})

    assert r.status_code == 200
    assert r.content == DATA


async def test_if_range_honours_the_range_only_for_the_current_etag(
    client: httpx.AsyncClient,
) -> None:
    current = await client.get(URL, headers={"Range": "bytes=0-9", "If-Range": ETAG})
    stale = await client.get(URL, headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    dated = await client.get(
        URL, headers={"Range": "bytes=0-9", "If-Range": "Wed, 21 Oct 2015 07:28:00 GMT"}
    )

    assert (current.status_code, current.content) == (206, DATA[:10])
    assert (stale.status_code, stale.content) == (200, DATA)
    assert (dated.status_code, dated.content) == (200, DATA)


async def test_head_sends_the_headers_of_get_without_a_body(client: httpx.AsyncClient) -> None:
    r = await client.head(URL)

    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(DATA))
    assert r.headers["etag"] == ETAG
    assert r.headers["accept-ranges"] == "bytes"


async def test_head_ignores_range(client: httpx.AsyncClient) -> None:
    # RFC 9110 §14.2: range handling is defined for GET only.
    r = await client.head(URL, headers={"Range": "bytes=0-9"})

    assert r.status_code == 200
    assert r.headers["content-length"] == str(len(DATA))
    assert "content-range" not in r.headers


async def test_plain_dict_headers_are_read_case_insensitively(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    obj = await storage.put_stream("a.bin", _once(b"0123456789"), content_type="text/plain")

    response = await stream_stored_object(storage, obj, {"RANGE": "bytes=2-3"})

    assert response.status_code == 206
    assert response.headers["content-range"] == "bytes 2-3/10"
