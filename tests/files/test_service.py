"""Uploads through `POST /v1/files`: a file that is not a whole, readable video (or audio
file) is refused, deleted, and described to the tenant without our storage layout."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.config import Settings
from app.media.samples import ensure_sample_video
from tests.conftest import TenantCreds


async def _upload(api: httpx.AsyncClient, tenant: TenantCreds, body: bytes) -> httpx.Response:
    return await api.post(
        "/v1/files", content=body, headers={**tenant.headers, "Content-Type": "video/mp4"}
    )


async def test_a_video_cut_short_is_refused_and_not_kept(
    api: httpx.AsyncClient,
    tenant: TenantCreds,
    settings: Settings,
    connection: AsyncConnection,
    tmp_path: Path,
) -> None:
    whole = ensure_sample_video(tmp_path / "sample").read_bytes()
    assert (await _upload(api, tenant, whole)).status_code == 201

    r = await _upload(api, tenant, whole[:3000])  # its index promises 4 s; 3 kB of frames follow

    assert r.status_code == 422, r.text
    assert r.json()["code"] == "video_unreadable"
    assert "cut short" in r.json()["detail"]
    files = await connection.scalar(text("SELECT count(*) FROM files"))
    assert files == 1
    stored = Path(settings.data_dir, "files", "uploads").rglob("*")
    assert len([p for p in stored if p.is_file()]) == 1


async def test_an_unreadable_upload_is_described_without_paths_or_tenant_ids(
    api: httpx.AsyncClient, tenant: TenantCreds, settings: Settings
) -> None:
    r = await _upload(api, tenant, bytes(range(256)) * 40)

    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["code"] == "video_unreadable"
    assert problem["detail"].startswith("The upload is not a readable video")
    for secret in (str(Path(settings.data_dir).resolve()), str(settings.data_dir), tenant.id):
        assert secret not in r.text


async def test_an_audio_file_is_an_upload_typed_by_its_content(
    api: httpx.AsyncClient, tenant: TenantCreds, tmp_path: Path
) -> None:
    from tests.support.clips import make_tone

    # sent as video/mp4: the stored type comes from what the bytes are
    r = await _upload(api, tenant, make_tone(tmp_path / "ref.wav", 2.5).read_bytes())

    assert r.status_code == 201, r.text
    body = r.json()
    assert body["content_type"] == "audio/wav" and body["filename"] == "upload.wav"
    assert body["probe"]["video"] is None
    assert body["probe"]["duration_s"] == 2.5
