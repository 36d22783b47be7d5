"""What is particular to `S3Storage`, against a real S3-compatible server (moto's, in its own
process; see conftest.py): multipart uploads and their abort, the metadata on the objects,
presigned URLs, range responses over S3, bounded memory, and cleaning up after crashes.
The contract every backend shares is tested in test_base.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request, Response

from app.files.ranges import stream_stored_object
from app.storage import (
    InvalidKeyError,
    ObjectTooLargeError,
    S3Storage,
    StorageBackendError,
    StorageError,
)
from app.storage.s3 import MIN_PART_SIZE
from tests.storage.conftest import S3Server

KEY = "tenants/t1/jobs/j1/video.mp4"
MiB = 1024 * 1024


async def chunks_of(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def read_all(storage: S3Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await storage.open_range(key, start, end)])


def uploads_in_progress(server: S3Server, storage: S3Storage) -> list[str]:
    page = server.client().list_multipart_uploads(Bucket=server.bucket, Prefix=storage.prefix)
    return [upload["Key"] for upload in page.get("Uploads", [])]


def objects_under_prefix(server: S3Server, storage: S3Storage) -> list[str]:
    page = server.client().list_objects_v2(Bucket=server.bucket, Prefix=f"{storage.prefix}/")
    return [obj["Key"] for obj in page.get("Contents", [])]


async def test_object_lives_under_the_prefix_with_its_metadata(
    s3_server: S3Server, s3_storage: S3Storage
) -> None:
    stored = await s3_storage.put_stream(KEY, chunks_of(b"abc"), content_type="video/mp4")

    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=f"{s3_storage.prefix}/{KEY}")
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {"sha256": stored.sha256}
    assert objects_under_prefix(s3_server, s3_storage) == [f"{s3_storage.prefix}/{KEY}"]
    assert s3_storage.local_path(KEY) is None


async def test_large_object_goes_up_in_parts_and_reads_back(
    s3_server: S3Server, s3_storage: S3Storage
) -> None:
    data = os.urandom(20 * MiB)  # two 8 MiB parts and a short last one
    parts_seen: list[int] = []

    async def source() -> AsyncIterator[bytes]:
        async for chunk in chunks_of(data[: 18 * MiB]):
            yield chunk
        # Two parts are up by now, in the upload to the temporary object.
        raw = s3_server.client()
        for key in uploads_in_progress(s3_server, s3_storage):
            assert key.startswith(f"{s3_storage.prefix}/.tmp/")
            upload = raw.list_multipart_uploads(Bucket=s3_server.bucket, Prefix=key)["Uploads"][0]
            listed = raw.list_parts(Bucket=s3_server.bucket, Key=key, UploadId=upload["UploadId"])
            parts_seen.extend(part["Size"] for part in listed["Parts"])
        async for chunk in chunks_of(data[18 * MiB :]):
            yield chunk

    stored = await s3_storage.put_stream(KEY, source(), content_type="video/mp4")

    assert parts_seen == [8 * MiB, 8 * MiB]
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await s3_storage.stat(KEY) == stored
    assert await read_all(s3_storage, KEY) == data
    boundary = 8 * MiB
    assert (
        await read_all(s3_storage, KEY, boundary - 10, boundary + 10)
        == data[boundary - 10 : boundary + 11]
    )
    # The temporary object is gone and no upload is left open.
    assert objects_under_prefix(s3_server, s3_storage) == [f"{s3_storage.prefix}/{KEY}"]
    assert uploads_in_progress(s3_server, s3_storage) == []


async def test_parts_of_the_minimum_size_are_accepted(s3_server: S3Server) -> None:
    storage = s3_server.storage(part_size=MIN_PART_SIZE)
    data = os.urandom(2 * MIN_PART_SIZE + 1)  # moto refuses non-final parts under 5 MiB

    stored = await storage.put_stream(KEY, chunks_of(data, 1000 * 1000), content_type="a/b")

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(storage, KEY) == data


async def test_put_file_of_a_large_file_goes_up_in_parts(
    s3_server: S3Server, s3_storage: S3Storage, tmp_path: Path
) -> None:
    data = os.urandom(17 * MiB)
    source = tmp_path / "big.bin"
    source.write_bytes(data)

    stored = await s3_storage.put_file(KEY, source, content_type="video/mp4")

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await s3_storage.stat(KEY) == stored
    assert await read_all(s3_storage, KEY) == data
    assert objects_under_prefix(s3_server, s3_storage) == [f"{s3_storage.prefix}/{KEY}"]


async def test_max_bytes_aborts_a_multipart_upload_midway(
    s3_server: S3Server, s3_storage: S3Storage
) -> None:
    old = await s3_storage.put_stream(KEY, chunks_of(b"old"), content_type="text/plain")
    uploads_seen: list[str] = []

    async def endless() -> AsyncIterator[bytes]:
        sent = 0
        while True:
            if sent == 18 * MiB:  # two parts are up by now
                uploads_seen.extend(uploads_in_progress(s3_server, s3_storage))
            sent += MiB
            yield os.urandom(MiB)

    with pytest.raises(ObjectTooLargeError):
        await s3_storage.put_stream(KEY, endless(), content_type="video/mp4", max_bytes=20 * MiB)

    assert len(uploads_seen) == 1  # the limit was hit in the middle of a multipart upload
    assert uploads_in_progress(s3_server, s3_storage) == []
    assert await s3_storage.stat(KEY) == old
    assert await read_all(s3_storage, KEY) == b"old"
    assert objects_under_prefix(s3_server, s3_storage) == [f"{s3_storage.prefix}/{KEY}"]


async def test_cancelled_multipart_upload_is_aborted(
    s3_server: S3Server, s3_storage: S3Storage
) -> None:
    stalled = asyncio.Event()

    async def stalls_after_a_part() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield os.urandom(MiB)
        stalled.set()
        await asyncio.Event().wait()  # a source that never delivers again
        yield b""

    task = asyncio.create_task(
        s3_storage.put_stream(KEY, stalls_after_a_part(), content_type="video/mp4")
    )
    await stalled.wait()
    assert len(uploads_in_progress(s3_server, s3_storage)) == 1

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert uploads_in_progress(s3_server, s3_storage) == []
    assert await s3_storage.stat(KEY) is None


async def test_presigned_url_serves_the_object_without_credentials(
    s3_storage: S3Storage,
) -> None:
    data = os.urandom(100_000)
    await s3_storage.put_stream(KEY, chunks_of(data), content_type="video/mp4")

    url = await s3_storage.presigned_url(KEY, 120)

    assert url is not None and "X-Amz-Expires=120" in url
    async with httpx.AsyncClient() as client:
        whole = await client.get(url)
        part = await client.get(url, headers={"Range": "bytes=10-19"})
    assert (whole.status_code, whole.content) == (200, data)
    assert whole.headers["content-type"] == "video/mp4"
    assert (part.status_code, part.content) == (206, data[10:20])


async def test_presigned_url_expiry_defaults_and_bounds(s3_server: S3Server) -> None:
    storage = s3_server.storage(presign_expires_s=300)

    assert "X-Amz-Expires=300" in (await storage.presigned_url(KEY) or "")
    with pytest.raises(ValueError):
        await storage.presigned_url(KEY, 0)
    with pytest.raises(ValueError):
        await storage.presigned_url(KEY, 8 * 24 * 3600)  # SigV4 URLs live a week at most


@pytest.fixture
async def client(s3_storage: S3Storage) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()

    @app.api_route("/files/{key:path}", methods=["GET", "HEAD"])
    async def serve(key: str, request: Request) -> Response:
        obj = await s3_storage.stat(key)
        if obj is None:
            raise HTTPException(404)
        return await stream_stored_object(s3_storage, obj, request.headers, method=request.method)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


RANGE_DATA = os.urandom(150_000)


@pytest.mark.parametrize(
    ("headers", "status", "body"),
    [
        ({}, 200, RANGE_DATA),
        ({"Range": "bytes=60000-140000"}, 206, RANGE_DATA[60000:140001]),
        ({"Range": "bytes=-10"}, 206, RANGE_DATA[-10:]),
        ({"Range": "bytes=149999-"}, 206, RANGE_DATA[-1:]),
        ({"Range": f"bytes={len(RANGE_DATA)}-"}, 416, b""),
    ],
)
async def test_stored_object_is_served_by_range_over_s3(
    s3_storage: S3Storage,
    client: httpx.AsyncClient,
    headers: dict[str, str],
    status: int,
    body: bytes,
) -> None:
    await s3_storage.put_stream(KEY, chunks_of(RANGE_DATA), content_type="video/mp4")

    r = await client.get(f"/files/{KEY}", headers=headers)

    assert (r.status_code, r.content) == (status, body)
    assert r.headers["etag"] == f'"{hashlib.sha256(RANGE_DATA).hexdigest()}"'
    if status == 206:
        assert r.headers["content-length"] == str(len(body))


async def test_put_stream_memory_stays_bounded(s3_storage: S3Storage) -> None:
    size = 40 * MiB
    expected = hashlib.sha256()

    async def source() -> AsyncIterator[bytes]:
        for _ in range(size // (64 * 1024)):
            chunk = os.urandom(64 * 1024)
            expected.update(chunk)
            yield chunk

    tracemalloc.start()
    try:
        stored = await s3_storage.put_stream(KEY, source(), content_type="video/mp4")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert stored.size_bytes == size and stored.sha256 == expected.hexdigest()
    # About two 8 MiB parts: the chunks being gathered, then the joined part while it is sent.
    assert peak < 24 * MiB, f"peak {peak / MiB:.1f} MiB for a {size // MiB} MiB object"


async def test_open_range_memory_stays_bounded(s3_storage: S3Storage) -> None:
    size = 24 * MiB
    await s3_storage.put_stream(KEY, chunks_of(b"\0" * size, MiB), content_type="video/mp4")

    tracemalloc.start()
    try:
        received = 0
        async for chunk in await s3_storage.open_range(KEY):
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert received == size
    assert peak < 4 * MiB, f"peak {peak / MiB:.1f} MiB reading a {size // MiB} MiB object"


async def test_stale_uploads_and_temporary_objects_are_removed(
    s3_server: S3Server, s3_storage: S3Storage
) -> None:
    raw = s3_server.client()
    tmp = f"{s3_storage.prefix}/.tmp"
    await s3_storage.put_stream(KEY, chunks_of(b"kept"), content_type="text/plain")
    raw.put_object(Bucket=s3_server.bucket, Key=f"{tmp}/crashed-copy", Body=b"x")

    assert await s3_storage.remove_stale_tmp() == 0  # too young: maybe a write in progress

    # Uploads only now: moto reports every upload as initiated in 2010 (a constant in its
    # responses), so their age filter cannot be shown here, only that they are aborted.
    raw.create_multipart_upload(Bucket=s3_server.bucket, Key=f"{tmp}/crashed-upload")
    other = s3_server.storage()  # another prefix in the same bucket: not ours to clean
    raw.create_multipart_upload(Bucket=s3_server.bucket, Key=f"{other.prefix}/.tmp/theirs")

    assert await s3_storage.remove_stale_tmp(older_than_s=-60) == 2

    assert uploads_in_progress(s3_server, s3_storage) == []
    assert objects_under_prefix(s3_server, s3_storage) == [f"{s3_storage.prefix}/{KEY}"]
    assert uploads_in_progress(s3_server, other) == [f"{other.prefix}/.tmp/theirs"]


async def test_object_without_our_metadata_is_an_error(
    s3_server: S3Server, s3_storage: S3Storage
) -> None:
    s3_server.client().put_object(
        Bucket=s3_server.bucket, Key=f"{s3_storage.prefix}/{KEY}", Body=b"foreign"
    )

    with pytest.raises(StorageBackendError, match="sha256"):
        await s3_storage.stat(KEY)


async def test_backend_failures_are_storage_errors(s3_server: S3Server) -> None:
    storage = S3Storage(
        "no-such-bucket",
        endpoint_url=s3_server.endpoint_url,
        region=s3_server.region,
        access_key_id=s3_server.access_key_id,
        secret_access_key=s3_server.secret_access_key,
        force_path_style=True,
    )

    with pytest.raises(StorageError) as excinfo:
        await storage.put_stream(KEY, chunks_of(b"x"), content_type="text/plain")
    assert isinstance(excinfo.value, StorageBackendError)
    with pytest.raises(StorageBackendError):
        await storage.open_range(KEY)
    with pytest.raises(StorageBackendError):
        await storage.put_stream(KEY, chunks_of(os.urandom(9 * MiB)), content_type="a/b")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"bucket": ""}, ValueError),
        ({"bucket": "b", "access_key_id": "id"}, ValueError),  # the secret is missing
        ({"bucket": "b", "part_size": MIN_PART_SIZE - 1}, ValueError),
        ({"bucket": "b", "presign_expires_s": 0}, ValueError),
        ({"bucket": "b", "prefix": "../up"}, InvalidKeyError),
    ],
)
def test_constructor_refuses_bad_settings(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        S3Storage(**options, region="us-east-1")
