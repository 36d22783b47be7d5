"""A sound's pictures (waveform, spectrogram) drawn from a stored file, tenant-scoped; the
operator's fleet view."""

from __future__ import annotations

import struct
import zlib

import httpx
import numpy as np

from app.console import images
from tests.conftest import ADMIN, TenantCreds
from tests.support.clips import Clip


def png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    _length, kind = struct.unpack(">I4s", body[8:16])
    assert kind == b"IHDR"
    width, height = struct.unpack(">II", body[16:24])
    return width, height


def png_pixels(body: bytes) -> np.ndarray:
    width, height = png_size(body)
    idat_at = body.index(b"IDAT")
    (length,) = struct.unpack(">I", body[idat_at - 4 : idat_at])
    raw = zlib.decompress(body[idat_at + 4 : idat_at + 4 + length])
    rows = np.frombuffer(raw, np.uint8).reshape(height, 1 + width * 3)
    assert (rows[:, 0] == 0).all()  # filter type none on every row
    return rows[:, 1:].reshape(height, width, 3)


def test_a_waveform_draws_the_loud_part_taller_than_the_quiet_part() -> None:
    t = np.arange(images.RATE * 2) / images.RATE
    sound = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    sound[: images.RATE] *= 0.1  # the first second quiet
    pixels = png_pixels(images.png(images.waveform(sound)))
    drawn = (pixels == images.WAVE_COLOUR).all(axis=2).sum(axis=0)
    assert drawn[images.WIDTH // 4] < drawn[3 * images.WIDTH // 4] / 4


def test_a_spectrogram_puts_a_high_tone_above_a_low_one() -> None:
    t = np.arange(images.RATE) / images.RATE
    low = np.sin(2 * np.pi * 300 * t)
    high = np.sin(2 * np.pi * 5000 * t)
    pixels = png_pixels(
        images.png(images.spectrogram(np.concatenate([low, high]).astype(np.float32)))
    )
    brightness = pixels.sum(axis=2)
    left = brightness[:, images.WIDTH // 4].argmax()
    right = brightness[:, 3 * images.WIDTH // 4].argmax()
    assert right < left  # row 0 is the top: the higher tone's row is nearer to it
    assert pixels.shape == (images.SPECTRUM_BINS, images.WIDTH, 3)


async def test_pictures_of_an_uploaded_files_sound(
    api: httpx.AsyncClient, tenant: TenantCreds, other_tenant: TenantCreds, mp4_with_audio: Clip
) -> None:
    r = await api.post(
        "/v1/files?filename=clip.mp4",
        content=mp4_with_audio.path.read_bytes(),
        headers={**tenant.headers, "Content-Type": "video/mp4"},
    )
    assert r.status_code == 201, r.text
    file_id = r.json()["id"]
    r = await api.get(f"/console/media/{file_id}/waveform.png", headers=tenant.headers)
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/png"
    assert png_size(r.content) == (images.WIDTH, images.WAVE_HEIGHT)
    assert (png_pixels(r.content) == images.WAVE_COLOUR).all(axis=2).sum() > images.WIDTH
    etag = r.headers["etag"]
    again = await api.get(
        f"/console/media/{file_id}/waveform.png", headers={**tenant.headers, "If-None-Match": etag}
    )
    assert again.status_code == 304
    r = await api.get(f"/console/media/{file_id}/spectrogram.png", headers=tenant.headers)
    assert png_size(r.content) == (images.WIDTH, images.SPECTRUM_BINS)
    # Another tenant's file is as absent as a file that never existed.
    r = await api.get(f"/console/media/{file_id}/waveform.png", headers=other_tenant.headers)
    assert r.status_code == 404
    assert r.json()["code"] == "file_not_found"
    r = await api.get(f"/console/media/{file_id}/loudness.png", headers=tenant.headers)
    assert r.status_code == 422


async def test_a_file_without_sound_draws_a_flat_line(
    api: httpx.AsyncClient, tenant: TenantCreds, mp4_without_audio: Clip
) -> None:
    r = await api.post(
        "/v1/files",
        content=mp4_without_audio.path.read_bytes(),
        headers={**tenant.headers, "Content-Type": "video/mp4"},
    )
    file_id = r.json()["id"]
    r = await api.get(f"/console/media/{file_id}/waveform.png", headers=tenant.headers)
    assert r.status_code == 200
    assert (png_pixels(r.content) == images.WAVE_COLOUR).all(axis=2).sum() == 0


async def test_the_fleet_counts_unfinished_jobs_for_the_operator_only(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    for _ in range(2):
        r = await api.post(
            "/v1/jobs",
            json={"model": "thinksound", "input": {"video_url": "https://example.com/a.mp4"}},
            headers=tenant.headers,
        )
        assert r.status_code == 202, r.text
    assert (await api.get("/v1/admin/fleet", headers=tenant.headers)).status_code == 401
    r = await api.get("/v1/admin/fleet", headers=ADMIN)
    assert r.status_code == 200, r.text
    fleet = r.json()
    queued = next(s for s in fleet["live_jobs"] if s["status"] == "queued")
    assert queued["jobs"] == 2
    assert queued["oldest_age_s"] >= 0
    assert fleet["fal_slots_in_use"] == 0
    assert fleet["fal_slots"] == api.app.state.settings.fal_concurrency  # type: ignore[attr-defined]
    assert fleet["workers_alive"] == sum(w["alive"] for w in fleet["workers"])


async def test_reconcile_without_a_fal_key_says_so(api: httpx.AsyncClient) -> None:
    settings = api.app.state.settings  # type: ignore[attr-defined]
    settings.fal_key = None
    settings.fal_admin_key = None
    r = await api.get("/v1/admin/reconcile", headers=ADMIN)
    assert r.status_code == 503
    assert r.json()["code"] == "reconcile_unavailable"
