"""`POST /v1/jobs?dry_run=true` (service.estimate_only): the estimate of a ThinkSound job (billed
by compute time, so by the video's length) uses the measured length when there is one."""

from __future__ import annotations

from pathlib import Path

import httpx

from app.media.samples import ensure_sample_video
from tests.conftest import TenantCreds


async def test_dry_run_estimates_an_upload_from_its_measured_length(
    api: httpx.AsyncClient, tenant: TenantCreds, tmp_path: Path
) -> None:
    video = ensure_sample_video(tmp_path).read_bytes()  # 4 s
    r = await api.post(
        "/v1/files", content=video, headers={**tenant.headers, "Content-Type": "video/mp4"}
    )
    assert r.status_code == 201, r.text
    body = {"model": "thinksound", "input": {"video_file_id": r.json()["id"]}}

    est = (await api.post("/v1/jobs?dry_run=true", json=body, headers=tenant.headers)).json()
    validated = (await api.post("/v1/validate", json=body, headers=tenant.headers)).json()

    # 4 s × 1.0 compute s per video s (the default until jobs are seen) × $0.001
    assert est["video_duration_s"] == 4.0 and est["estimated_cost_usd"] == "0.004000"
    assert validated["estimate"]["estimated_cost_usd"] == est["estimated_cost_usd"]


async def test_dry_run_of_a_url_assumes_the_default_length_without_fetching(
    api: httpx.AsyncClient, tenant: TenantCreds
) -> None:
    body = {"model": "thinksound", "input": {"video_url": "https://videos.example/never.mp4"}}

    est = (await api.post("/v1/jobs?dry_run=true", json=body, headers=tenant.headers)).json()

    assert est["video_duration_s"] == 10.0 and est["estimated_cost_usd"] == "0.010000"
