"""The S3-compatible storage backend (AWS S3, MinIO, Cloudflare R2, Ceph …), through boto3.

boto3 is synchronous; every call runs in a worker thread, so the event loop never waits on the
network. The threads are a pool of this module's (`_run`), not asyncio's default executor: that
one is small (CPU count + 4) and also resolves host names for every asyncio connection
(`loop.getaddrinfo`), so a few slow part uploads holding its threads would stall the upstream
HTTP client's DNS look-ups. A boto3 client is thread-safe, so one client serves all threads;
its connection pool matches the thread pool (`_THREADS`), so a thread never waits for one.

How the `Storage` contract maps onto S3:

* key `a/b.mp4` is object `<prefix>/a/b.mp4` in the bucket;
* the object's SHA-256 is user metadata (`x-amz-meta-sha256`) and its content type the
  object's own `Content-Type`, so `stat` is one `HeadObject` and data and metadata are replaced
  together, atomically, as S3 replaces whole objects;
* a write that fits in one part (`part_size`, 8 MiB by default) is buffered and sent as one
  `PutObject`. A larger one is streamed as a multipart upload to a temporary object
  `<prefix>/.tmp/<uuid>`, then copied server-side (`CopyObject`) to its key with the SHA-256,
  now known, as metadata, and the temporary object deleted. S3 metadata cannot be changed after
  an upload, and the hash is only known at its end; writing the final key directly and fixing
  the metadata afterwards would let readers see an object without a hash, or lose the old
  object when the fix-up fails. The cost is one server-side copy of objects above `part_size`;
  `CopyObject` handles up to 5 GiB, hence `MAX_OBJECT_BYTES`;
* a write that fails, is cancelled or exceeds `max_bytes` aborts its multipart upload (or
  deletes its temporary object), so nothing is left behind and the previous object under the
  key is untouched. A process that dies mid-upload leaves an incomplete upload that
  `remove_stale_tmp` (or a bucket lifecycle rule `AbortIncompleteMultipartUpload`) removes;
* reads are ranged `GetObject`s, read in 64 KiB chunks; `presigned_url` signs a `GetObject`.

Memory per write is about two parts (the chunks being gathered, then the joined part while it
is sent), whatever the object's size: 16 MiB with the default `part_size`, per concurrent write.

Permissions needed on the bucket: `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject`,
`s3:ListBucket` (without it S3 answers 403 instead of 404 for a missing key, which `stat` then
reports as an error), `s3:ListBucketMultipartUploads` and `s3:AbortMultipartUpload` (for
`remove_stale_tmp`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import threading
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from app.storage.base import (
    CHUNK_SIZE,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
    StoredObject,
    validate_key,
)

log = structlog.get_logger(__name__)

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MAX_OBJECT_BYTES = 5 * 1024**3  # CopyObject's limit (see the module docstring)
MAX_PRESIGN_EXPIRY_S = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week
_SHA256_METADATA = "sha256"  # sent as x-amz-meta-sha256
_TMP_DIR = ".tmp"  # never a valid key segment (validate_key), so no collision with objects
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_THREADS = 16  # S3 calls in flight at once, per process

_P = ParamSpec("_P")
_T = TypeVar("_T")


class StorageBackendError(StorageError):
    """The object store failed or refused a request (network, credentials, permissions …)."""


class S3Storage:
    """Objects in an S3-compatible bucket (see the module docstring).

    `endpoint_url` is `None` for AWS itself, else the server's URL (`http://127.0.0.1:9000`
    for a local MinIO, `https://<account>.r2.cloudflarestorage.com` for R2). Without
    `access_key_id`/`secret_access_key`, boto3's default credential chain applies (environment,
    shared files, instance or task role). `force_path_style` addresses `endpoint/bucket/key`
    instead of `bucket.endpoint/key`, which MinIO and most self-hosted servers need.
    `presign_expires_s` is the lifetime of a presigned URL when `presigned_url` is not given
    one. Creating the client loads botocore's service model, a blocking ~0.1 s: build the
    storage once, at startup.
    """

    supports_presigned_urls = True

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        force_path_style: bool = False,
        presign_expires_s: int = 3600,
        part_size: int = DEFAULT_PART_SIZE,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both the access key id and the secret access key, or neither")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        _check_expiry(presign_expires_s)
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = validate_key(prefix) if prefix else ""
        self.presign_expires_s = presign_expires_s
        self.part_size = part_size
        # Imported here: boto3 (its session and s3transfer) cost 0.45 s of every process's start,
        # and a process on local storage never uses it.
        import boto3.session
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if force_path_style else "auto"},
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=_THREADS,
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
            ),
        )

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @property
    def _tmp_prefix(self) -> str:
        return f"{self.prefix}/{_TMP_DIR}/" if self.prefix else f"{_TMP_DIR}/"

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        max_bytes: int | None = None,
    ) -> StoredObject:
        upload = _Upload(self, key, content_type)
        limit = MAX_OBJECT_BYTES if max_bytes is None else min(max_bytes, MAX_OBJECT_BYTES)
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise ObjectTooLargeError(limit)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= self.part_size:
                    part = b"".join(pending)
                    pending.clear()
                    pending_size = 0
                    await _run(upload.add_part, part)
                    del part
            tail = b"".join(pending)
            pending.clear()
            return await _run(upload.finish, tail)
        except BaseException:
            # Also on cancellation: `_run` hands `abort` to a worker thread before its first
            # suspension, so the abort runs even if this task is cancelled again while waiting
            # for it. `abort` waits for a part upload still in flight (the upload's lock).
            await _run(upload.abort)
            raise

    async def put_file(self, key: str, path: Path, *, content_type: str) -> StoredObject:
        upload = _Upload(self, key, content_type)
        return await _run(self._put_file_sync, upload, Path(path))

    def _put_file_sync(self, upload: _Upload, source: Path) -> StoredObject:
        try:
            with source.open("rb") as f:
                part = f.read(self.part_size)
                while len(part) == self.part_size:
                    upload.add_part(part)
                    part = f.read(self.part_size)
            return upload.finish(part)
        except BaseException:
            upload.abort()
            raise

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        object_key = self._object_key(key)
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"invalid byte range {start}-{end}")
        # No Range header for a whole-object read: S3 answers 416 to `bytes=0-` on an empty
        # object. Unlike LocalStorage, the GET is made now, so one round trip both answers
        # "not found" and starts the body; a result never iterated leaves its connection to the
        # garbage collector.
        byte_range = None
        if start > 0 or end is not None:
            byte_range = f"bytes={start}-{'' if end is None else end}"
        body = await _run(self._get_sync, key, object_key, byte_range)
        if body is None:  # the range starts past the end of the object: nothing to read
            return _no_chunks()
        return _read_body(body)

    def _get_sync(self, key: str, object_key: str, byte_range: str | None) -> Any:
        params = {"Bucket": self.bucket, "Key": object_key}
        if byte_range is not None:
            params["Range"] = byte_range
        try:
            with _translated_errors():
                return self._client.get_object(**params)["Body"]
        except StorageBackendError as exc:
            code = _error_code(exc.__cause__)
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFoundError(key) from None
            if code == "InvalidRange":
                return None
            raise

    async def stat(self, key: str) -> StoredObject | None:
        object_key = self._object_key(key)
        return await _run(self._stat_sync, key, object_key)

    def _stat_sync(self, key: str, object_key: str) -> StoredObject | None:
        try:
            with _translated_errors():
                head = self._client.head_object(Bucket=self.bucket, Key=object_key)
        except StorageBackendError as exc:
            if _error_code(exc.__cause__) in _NOT_FOUND_CODES:
                return None
            raise
        sha256 = head.get("Metadata", {}).get(_SHA256_METADATA)
        if sha256 is None:
            raise StorageBackendError(
                f"object {object_key!r} has no {_SHA256_METADATA} metadata: not written by Foley"
            )
        return StoredObject(
            key=key,
            size_bytes=head["ContentLength"],
            sha256=sha256,
            content_type=head.get("ContentType", "application/octet-stream"),
        )

    async def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        await _run(self._delete_sync, object_key)

    def _delete_sync(self, object_key: str) -> None:
        # S3 answers 204 for a missing key too: deleting is idempotent without a check.
        with _translated_errors():
            self._client.delete_object(Bucket=self.bucket, Key=object_key)

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    async def presigned_url(self, key: str, expires_s: int | None = None) -> str | None:
        """A presigned `GetObject` URL, valid `expires_s` seconds (default: the constructor's
        `presign_expires_s`; at most a week). Signing is local, but resolving credentials from
        the default chain may query an instance metadata service, hence the thread."""
        object_key = self._object_key(key)
        expires = self.presign_expires_s if expires_s is None else expires_s
        _check_expiry(expires)
        return await _run(self._presign_sync, object_key, expires)

    def _presign_sync(self, object_key: str, expires_s: int) -> str:
        with _translated_errors():
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": object_key},
                ExpiresIn=expires_s,
            )
        return url

    async def remove_stale_tmp(self, older_than_s: float = 24 * 3600) -> int:
        """Abort multipart uploads and delete temporary objects a crashed writer left behind
        under `<prefix>/.tmp/`; returns how many. The counterpart of
        `LocalStorage.remove_stale_tmp`: only those older than `older_than_s` go, as a younger
        one may be another process's write in progress."""
        return await _run(self._remove_stale_tmp_sync, older_than_s)

    def _remove_stale_tmp_sync(self, older_than_s: float) -> int:
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        removed = 0
        with _translated_errors():
            uploads = self._client.get_paginator("list_multipart_uploads")
            for page in uploads.paginate(Bucket=self.bucket, Prefix=self._tmp_prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < cutoff:
                        self._client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
            objects = self._client.get_paginator("list_objects_v2")
            for page in objects.paginate(Bucket=self.bucket, Prefix=self._tmp_prefix):
                for obj in page.get("Contents", []):
                    if obj["LastModified"] < cutoff:
                        self._client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                        removed += 1
        return removed


class _Upload:
    """One object being written, driven from worker threads: a single `PutObject` if it fits in
    one part, else a multipart upload to a temporary object copied to the key at the end.

    The methods are synchronous and serialised by a lock, so `abort` waits for a part upload
    that is still running in another thread instead of racing it.
    """

    def __init__(self, storage: S3Storage, key: str, content_type: str) -> None:
        self._client = storage._client
        self._bucket = storage.bucket
        self._key = key
        self._object_key = storage._object_key(key)
        self._content_type = content_type
        self._tmp_key = f"{storage._tmp_prefix}{uuid.uuid4().hex}"
        self._hasher = hashlib.sha256()
        self._size = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._tmp_object_exists = False
        self._lock = threading.Lock()

    def add_part(self, data: bytes) -> None:
        """Send `data` (at least `MIN_PART_SIZE` bytes) as the next part."""
        with self._lock, _translated_errors():
            if self._upload_id is None:
                created = self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._tmp_key, ContentType=self._content_type
                )
                self._upload_id = created["UploadId"]
            self._upload_part(data)

    def _upload_part(self, data: bytes) -> None:
        self._hasher.update(data)
        self._size += len(data)
        number = len(self._parts) + 1
        sent = self._client.upload_part(
            Bucket=self._bucket,
            Key=self._tmp_key,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def finish(self, tail: bytes) -> StoredObject:
        """Send the last bytes and commit the object under its key."""
        with self._lock, _translated_errors():
            if self._upload_id is None:
                self._hasher.update(tail)
                self._size += len(tail)
                obj = self._stored_object()
                self._client.put_object(
                    Bucket=self._bucket,
                    Key=self._object_key,
                    Body=tail,
                    ContentType=obj.content_type,
                    Metadata={_SHA256_METADATA: obj.sha256},
                )
                return obj
            if tail:
                self._upload_part(tail)
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._tmp_key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
            self._upload_id = None
            self._tmp_object_exists = True
            obj = self._stored_object()
            self._client.copy_object(
                Bucket=self._bucket,
                Key=self._object_key,
                CopySource={"Bucket": self._bucket, "Key": self._tmp_key},
                MetadataDirective="REPLACE",
                ContentType=obj.content_type,
                Metadata={_SHA256_METADATA: obj.sha256},
            )
        # Committed: failing to delete the temporary object must not fail the write;
        # remove_stale_tmp collects it later.
        try:
            with self._lock, _translated_errors():
                self._client.delete_object(Bucket=self._bucket, Key=self._tmp_key)
                self._tmp_object_exists = False
        except StorageBackendError:
            log.warning("s3_tmp_object_not_deleted", key=self._tmp_key, exc_info=True)
        return obj

    def abort(self) -> None:
        """Undo whatever this upload stored; the object under the key is left as it was."""
        with self._lock:
            try:
                with _translated_errors():
                    if self._upload_id is not None:
                        self._client.abort_multipart_upload(
                            Bucket=self._bucket, Key=self._tmp_key, UploadId=self._upload_id
                        )
                        self._upload_id = None
                    if self._tmp_object_exists:
                        self._client.delete_object(Bucket=self._bucket, Key=self._tmp_key)
                        self._tmp_object_exists = False
            except StorageBackendError:
                # The original error matters more; remove_stale_tmp collects the leftovers.
                log.warning("s3_upload_not_aborted", key=self._tmp_key, exc_info=True)

    def _stored_object(self) -> StoredObject:
        return StoredObject(self._key, self._size, self._hasher.hexdigest(), self._content_type)


@functools.cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="foley-s3")


async def _run(fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`fn(*args, **kwargs)` in the S3 thread pool, with the caller's context variables (as
    `asyncio.to_thread`, so log bindings carry over). The call is submitted before the first
    suspension: once this is awaited, it runs even if the awaiting task is cancelled."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)


def _read_chunk(body: Any) -> bytes:
    with _translated_errors():
        chunk: bytes = body.read(CHUNK_SIZE)
    return chunk


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Raise botocore's errors as `StorageBackendError` (the original is the `__cause__`)."""
    try:
        yield
    except ClientError as exc:
        raise StorageBackendError(f"S3 request failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageBackendError(f"S3 request failed: {exc}") from exc


def _error_code(exc: BaseException | None) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _check_expiry(expires_s: int) -> None:
    if not 1 <= expires_s <= MAX_PRESIGN_EXPIRY_S:
        raise ValueError(f"a presigned URL lives 1 to {MAX_PRESIGN_EXPIRY_S} seconds")


async def _read_body(body: Any) -> AsyncIterator[bytes]:
    # The body is an open HTTP response: closed synchronously in `finally` so that it is
    # released even when the task is cancelled (a client that went away mid-download).
    try:
        while chunk := await _run(_read_chunk, body):
            yield chunk
    finally:
        body.close()


async def _no_chunks() -> AsyncIterator[bytes]:
    return
    yield  # an async generator that yields nothing
