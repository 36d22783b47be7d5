"""Storage fixtures: each backend, the filesystem and S3 against a real S3-compatible server
(moto's, in its own process), and what a test left behind where a backend writes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from app.storage import LocalStorage, S3Storage, Storage


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server on a loopback port, with one bucket the tests share (each storage uses
    a key prefix of its own)."""

    endpoint_url: str
    bucket: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    def client(self) -> Any:
        """A plain boto3 client, to look at the bucket behind the storage's back."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def storage(self, **options: Any) -> S3Storage:
        """An `S3Storage` on the shared bucket, under a fresh prefix unless one is given."""
        options.setdefault("prefix", f"tests/{uuid.uuid4().hex}")
        return S3Storage(
            self.bucket,
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            force_path_style=True,
            **options,
        )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    # A separate process, not moto's in-process ThreadedMotoServer: the bounded-memory tests
    # measure this process with tracemalloc, and the server keeps every object in memory.
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    for _attempt in range(3):  # another process may take the free port before the server does
        port = _free_loopback_port()
        with log_path.open("ab") as log:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        endpoint_url = f"http://127.0.0.1:{port}"
        if _wait_until_serving(proc, endpoint_url):
            break
        _stop(proc)
    else:
        pytest.fail(f"the moto S3 server did not start; see {log_path}")
    server = S3Server(endpoint_url=endpoint_url, bucket="foley-test")
    server.client().create_bucket(Bucket=server.bucket)
    try:
        yield server
    finally:
        _stop(proc)


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_serving(proc: subprocess.Popen[bytes], url: str, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            return True
        except httpx.TransportError:
            time.sleep(0.1)  # between attempts to reach it, up to the deadline above
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def s3_storage(s3_server: S3Server) -> S3Storage:
    return s3_server.storage()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each backend in turn, for the tests every backend must pass."""
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    # Looked up here, not declared, so that a run of local-only tests starts no S3 server.
    server: S3Server = request.getfixturevalue("s3_server")
    return server.storage()


@pytest.fixture
def leftovers(request: pytest.FixtureRequest, storage: Storage) -> Callable[[], list[str]]:
    """What the test has added where `storage` writes, so far: files anywhere under the local
    root's parent directory, or objects and unfinished multipart uploads anywhere in the bucket
    (so a key escaping the root or the prefix would show too)."""
    listing: Callable[[], set[str]]
    if isinstance(storage, LocalStorage):
        parent = storage.root.parent

        def listing() -> set[str]:
            return {str(p.relative_to(parent)) for p in parent.rglob("*") if p.is_file()}

    else:
        server: S3Server = request.getfixturevalue("s3_server")
        client = server.client()

        def listing() -> set[str]:
            found = set()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.bucket):
                found |= {obj["Key"] for obj in page.get("Contents", [])}
            for page in client.get_paginator("list_multipart_uploads").paginate(
                Bucket=server.bucket
            ):
                found |= {f"upload:{u['Key']}" for u in page.get("Uploads", [])}
            return found

    before = listing()
    return lambda: sorted(listing() - before)
