"""The gateway's file endpoints on the S3 backend (moto's server): uploads are stored and probed
through it, downloads stream with ranges, or redirect to a presigned URL when configured."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx

from app.storage import S3Storage
from tests.conftest import TenantCreds
from tests.support.clips import Clip


async def test_upload_and_download_through_s3(
    api: httpx.AsyncClient, tenant: TenantCreds, s3_storage: S3Storage, mp4_with_audio: Clip
) -> None:
    api.app.state.storage = s3_storage  # type: ignore[attr-defined]
    data = Path(mp4_with_audio.path).read_bytes()
    r = await api.post(
        "/v1/files?filename=a.mp4",
        content=data,
        headers={**tenant.headers, "Content-Type": "video/mp4"},
    )
    assert r.status_code == 201, r.text
    upload = r.json()
    assert upload["sha256"] == hashlib.sha256(data).hexdigest()
    assert upload["probe"]["audio"]["codec"] == "aac"  # probed from a temporary copy
    assert s3_storage.local_path(f"uploads/{tenant.id}/{upload['id']}") is None

    r = await api.get(f"/v1/files/{upload['id']}", headers={**tenant.headers, "Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == data[:10]
    assert r.headers["content-type"] == "video/mp4"

    api.app.state.settings.storage_presign = True  # type: ignore[attr-defined]
    r = await api.get(f"/v1/files/{upload['id']}", headers=tenant.headers)
    assert r.status_code == 307
    presigned = r.headers["location"]
    assert "X-Amz-Signature" in presigned
    async with httpx.AsyncClient() as plain:  # no API key: the signature is the credential
        fetched = await plain.get(presigned)
    assert fetched.status_code == 200 and fetched.content == data
