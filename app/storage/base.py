"""The storage interface every backend implements, with its shared types, errors and key rules.

The interface is shaped so that the backends (`LocalStorage`, `S3Storage`) are interchangeable
without changing callers:

* keys are `/`-separated relative names in a conservative alphabet that is valid both as a
  path and as an S3 object key (`validate_key`);
* writes are whole-object (`put_stream`, `put_file`) and atomic: a reader sees the old object or
  the new one, never a partial file;
* reads are by byte range (`open_range`), which maps onto S3's `GetObject(Range=...)`;
* every object carries its size, SHA-256 and content type (`StoredObject`); on S3 they are the
  object's own metadata;
* `local_path()` lets PyAV read a file in place when the backend has one, and
  `presigned_url()` lets the HTTP layer redirect instead of streaming when the backend can sign
  URLs (`supports_presigned_urls`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

CHUNK_SIZE = 64 * 1024
_MAX_KEY_LENGTH = 1024  # S3's limit, in bytes
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._=+-]*$")


class StorageError(Exception):
    """Base class for storage errors."""


class InvalidKeyError(StorageError, ValueError):
    """The key is not a safe relative object name."""


class ObjectNotFoundError(StorageError, LookupError):
    """No object is stored under the key."""


class ObjectTooLargeError(StorageError, ValueError):
    """A write exceeded its `max_bytes`; nothing was stored."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the object exceeds the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size_bytes: int
    sha256: str  # hex
    content_type: str

    @property
    def etag(self) -> str:
        """A strong HTTP entity tag: the content's SHA-256, quoted."""
        return f'"{self.sha256}"'


@runtime_checkable
class Storage(Protocol):
    """An object store. Implementations: `LocalStorage` (local.py), `S3Storage` (s3.py)."""

    supports_presigned_urls: bool

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        max_bytes: int | None = None,
    ) -> StoredObject:
        """Store the concatenated `chunks` under `key`, replacing any previous object.

        Raises `ObjectTooLargeError` (and stores nothing) as soon as more than `max_bytes`
        arrive, so an oversized download is cut short rather than read to the end.
        """
        ...

    async def put_file(self, key: str, path: Path, *, content_type: str) -> StoredObject:
        """Store a copy of the local file at `path` under `key`."""
        ...

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Open bytes `start`..`end` (inclusive, as in HTTP; `None`: to the end) for reading.

        Awaiting this raises `ObjectNotFoundError` at once, before any byte is produced, so a
        caller can still answer 404; the returned iterator yields chunks of at most 64 KiB.
        """
        ...

    async def stat(self, key: str) -> StoredObject | None:
        """The object's metadata, or `None` when there is no object under `key`."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    def local_path(self, key: str) -> Path | None:
        """Where the object's file is (whether or not it exists yet), or `None` when the backend
        keeps no local files (then download the object to a temporary file to probe it)."""
        ...

    async def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL that serves the object without our auth for `expires_s` seconds, or `None`.

        Async because S3 clients built on aiobotocore sign asynchronously.
        """
        ...


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative object name, else raise `InvalidKeyError`.

    A key is one or more `/`-separated segments of letters, digits and `._=+-`, none starting
    with a dot (so no `.`, `..` or hidden names) and none empty (so no absolute paths or `//`);
    backslashes, control characters and spaces are refused outright.
    """
    if not key or len(key.encode()) > _MAX_KEY_LENGTH:
        raise InvalidKeyError(f"invalid storage key {key!r}: empty or too long")
    for segment in key.split("/"):
        if not _KEY_SEGMENT.match(segment):
            raise InvalidKeyError(f"invalid storage key {key!r}: bad segment {segment!r}")
    return key
