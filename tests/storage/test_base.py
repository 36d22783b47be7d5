"""The storage contract (`Storage`, base.py), run against every backend (`storage` is parametrized
in conftest.py: the filesystem and S3 on a local moto server). What is particular to one backend
is in test_local.py and test_s3.py (multipart uploads, presigned URLs, memory)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.storage import (
    InvalidKeyError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    Storage,
    StoredObject,
)
from tests.support.clips import Clip

KEY = "tenants/t1/jobs/j1/video.mp4"
DATA = os.urandom(200_000)  # a bit over three 64 KiB chunks

Leftovers = Callable[[], list[str]]


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


async def read_all(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in await storage.open_range(key, start, end)])


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- The contract, on every backend ---------------------------------------------------------------


async def test_put_stream_then_stat_read_and_delete(storage: Storage) -> None:
    stored = await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4")

    assert stored == StoredObject(KEY, len(DATA), hashlib.sha256(DATA).hexdigest(), "video/mp4")
    assert stored.etag == f'"{hashlib.sha256(DATA).hexdigest()}"'
    assert await storage.stat(KEY) == stored
    assert await read_all(storage, KEY) == DATA

    await storage.delete(KEY)

    assert await storage.stat(KEY) is None
    with pytest.raises(ObjectNotFoundError):
        await storage.open_range(KEY)
    await storage.delete(KEY)  # deleting twice is fine


async def test_missing_object_is_none_and_not_found(storage: Storage) -> None:
    assert await storage.stat("never/written.mp4") is None
    with pytest.raises(ObjectNotFoundError):
        await storage.open_range("never/written.mp4", 10, 20)
    await storage.delete("never/written.mp4")


async def test_open_range_returns_the_inclusive_slice_in_64k_chunks(storage: Storage) -> None:
    await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4")

    chunks = [chunk async for chunk in await storage.open_range(KEY, 1_000, 150_000)]

    assert b"".join(chunks) == DATA[1_000:150_001]
    assert max(len(c) for c in chunks) <= 64 * 1024
    assert await read_all(storage, KEY, 0, 0) == DATA[:1]
    assert await read_all(storage, KEY, len(DATA) - 5) == DATA[-5:]
    assert await read_all(storage, KEY, len(DATA) - 5, len(DATA) + 100) == DATA[-5:]
    assert await read_all(storage, KEY, len(DATA) + 10) == b""  # past the end: nothing


async def test_invalid_byte_range_is_refused(storage: Storage) -> None:
    await storage.put_stream(KEY, chunks_of(b"0123456789"), content_type="text/plain")

    with pytest.raises(ValueError):
        await storage.open_range(KEY, 5, 4)
    with pytest.raises(ValueError):
        await storage.open_range(KEY, -1)


async def test_too_large_stream_is_refused_early_and_leaves_nothing(
    storage: Storage, leftovers: Leftovers
) -> None:
    consumed = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal consumed
        while True:
            consumed += 1
            yield b"x" * 1000

    with pytest.raises(ObjectTooLargeError) as excinfo:
        await storage.put_stream(KEY, endless(), content_type="video/mp4", max_bytes=50_000)

    assert excinfo.value.max_bytes == 50_000
    assert consumed == 51  # stopped at the first byte over the limit
    assert await storage.stat(KEY) is None
    assert leftovers() == []


async def test_too_large_replacement_keeps_the_existing_object(storage: Storage) -> None:
    first = await storage.put_stream(KEY, chunks_of(b"old"), content_type="text/plain")

    with pytest.raises(ObjectTooLargeError):
        await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4", max_bytes=1000)

    assert await storage.stat(KEY) == first
    assert await read_all(storage, KEY) == b"old"


async def test_exactly_max_bytes_is_accepted(storage: Storage) -> None:
    stored = await storage.put_stream(
        KEY, chunks_of(DATA), content_type="video/mp4", max_bytes=len(DATA)
    )

    assert stored.size_bytes == len(DATA)


async def test_failing_source_leaves_no_partial_object(
    storage: Storage, leftovers: Leftovers
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield DATA[:70_000]
        raise ConnectionError("upstream went away")

    with pytest.raises(ConnectionError):
        await storage.put_stream(KEY, broken(), content_type="video/mp4")

    assert await storage.stat(KEY) is None
    assert leftovers() == []


async def test_replacing_an_object_updates_data_and_metadata(storage: Storage) -> None:
    await storage.put_stream(KEY, chunks_of(DATA), content_type="video/mp4")

    second = await storage.put_stream(KEY, chunks_of(b"new"), content_type="text/plain")

    assert await storage.stat(KEY) == second
    assert await read_all(storage, KEY) == b"new"


async def test_empty_object(storage: Storage) -> None:
    stored = await storage.put_stream(KEY, chunks_of(b""), content_type="audio/mp4")

    assert stored.size_bytes == 0
    assert stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert await storage.stat(KEY) == stored
    assert await read_all(storage, KEY) == b""
    assert await read_all(storage, KEY, 0, 0) == b""


async def test_put_file_copies_the_file(
    storage: Storage, mp4_with_audio: Clip, leftovers: Leftovers
) -> None:
    original = mp4_with_audio.path.read_bytes()

    stored = await storage.put_file(KEY, mp4_with_audio.path, content_type="video/mp4")

    assert stored == StoredObject(
        KEY, len(original), hashlib.sha256(original).hexdigest(), "video/mp4"
    )
    assert await storage.stat(KEY) == stored
    assert await read_all(storage, KEY) == original
    assert mp4_with_audio.path.read_bytes() == original  # the source is left alone
    # Nothing but the object and its metadata: no temporary file, object or upload.
    assert [p for p in leftovers() if ".tmp" in p or p.startswith("upload:")] == []


async def test_keys_are_independent(storage: Storage) -> None:
    await storage.put_stream("a/one.bin", chunks_of(b"one"), content_type="text/plain")
    await storage.put_stream("a/two.bin", chunks_of(b"two"), content_type="text/plain")

    await storage.delete("a/one.bin")

    assert await storage.stat("a/one.bin") is None
    assert await read_all(storage, "a/two.bin") == b"two"


@pytest.mark.parametrize(
    "key",
    [
        "../escape",
        "a/../../escape",
        "a/./b",
        "/etc/passwd",
        "a\\b",
        "..\\escape",
        "",
        "a//b",
        "a/",
        ".meta/a.json",
        ".tmp/x",
        "a/.hidden",
        "a\x00b",
        "a b",
        "x" * 1025,
    ],
)
async def test_unsafe_keys_are_rejected(storage: Storage, leftovers: Leftovers, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        await storage.put_stream(key, chunks_of(b"x"), content_type="text/plain")
    with pytest.raises(InvalidKeyError):
        await storage.put_file(key, Path(__file__), content_type="text/plain")
    with pytest.raises(InvalidKeyError):
        await storage.stat(key)
    with pytest.raises(InvalidKeyError):
        await storage.open_range(key)
    with pytest.raises(InvalidKeyError):
        await storage.delete(key)
    with pytest.raises(InvalidKeyError):
        storage.local_path(key)
    with pytest.raises(InvalidKeyError):
        await storage.presigned_url(key, 600)
    assert leftovers() == []


async def test_every_backend_is_a_storage(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    assert isinstance(storage.supports_presigned_urls, bool)
    url = await storage.presigned_url(KEY, 600)
    assert (url is not None) == storage.supports_presigned_urls
