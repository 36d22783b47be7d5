"""Billing truth: what fal would bill per request, read through the platform API shape."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.emulator import EmulatorProcess
from tests.support.fal_queue import run, submit

KLING = "fal-ai/kling-video/video-to-audio"
THINKSOUND = "fal-ai/thinksound"
VIDEO = {"video_url": "https://example.invalid/clip.mp4"}


def _platform(emu: EmulatorProcess, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{emu.base_url}/v1/models/{path}",
        params=params,
        headers={"Authorization": f"Key {emu.admin_key}"},
    )


def _record(emu: EmulatorProcess, request_id: str) -> dict[str, Any]:
    record: dict[str, Any] = emu.job(request_id)["usage"]
    return record


def test_pricing(fast_emu: EmulatorProcess) -> None:
    response = _platform(fast_emu, "pricing", endpoint_id=f"{KLING},{THINKSOUND}")
    assert response.status_code == 200
    prices = {p["endpoint_id"]: p for p in response.json()["prices"]}
    assert prices[KLING] == {
        "endpoint_id": KLING, "unit_price": 0.035, "unit": "video", "currency": "USD",
    }  # fmt: skip
    assert (prices[THINKSOUND]["unit_price"], prices[THINKSOUND]["unit"]) == (
        0.001,
        "compute_seconds",
    )


def test_platform_api_needs_the_admin_key(fast_emu: EmulatorProcess) -> None:
    url = f"{fast_emu.base_url}/v1/models/pricing"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=fast_emu.auth_headers).status_code == 403
    bearer = httpx.get(url, headers={"Authorization": f"Bearer {fast_emu.admin_key}"})
    assert bearer.status_code == 401  # fal's platform API takes "Key <admin key>" only


def test_kling_bills_one_video_and_thinksound_its_compute_seconds(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(run_time=0.3)
    kling, _ = run(fast_client, fast_emu.base_url, KLING, VIDEO)
    think, _ = run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    kling_record = _record(fast_emu, kling["request_id"])
    assert (kling_record["unit_quantity"], kling_record["cost"]) == (1.0, 0.035)
    think_record = _record(fast_emu, think["request_id"])
    status = fast_client.get(think["status_url"]).json()
    seconds = status["metrics"]["inference_time"]
    # The bill is exactly the reported inference time: what a client computes, it is charged.
    assert think_record["unit_quantity"] == seconds >= 0.3
    assert think_record["cost"] == round(seconds * 0.001, 9)
    assert think_record["billed"] is True

    events = _platform(fast_emu, "billing-events", request_id=kling["request_id"]).json()
    assert [e["request_id"] for e in events["billing_events"]] == [kling["request_id"]]
    event = events["billing_events"][0]
    assert (event["endpoint_id"], event["output_units"], event["unit_price"]) == (KLING, 1.0, 0.035)
    assert event["cost_estimate_nano_usd"] == 35_000_000
    assert events["has_more"] is False

    usage = _platform(fast_emu, "usage", expand="time_series,summary").json()
    summary = {item["endpoint_id"]: item for item in usage["summary"]}
    assert summary[KLING]["quantity"] == 1.0 and summary[KLING]["cost"] == 0.035
    assert summary[THINKSOUND]["unit"] == "compute_seconds"
    buckets = usage["time_series"]
    assert buckets and {r["endpoint_id"] for b in buckets for r in b["results"]} == {
        KLING,
        THINKSOUND,
    }
    only_kling = _platform(fast_emu, "usage", endpoint_id=KLING, expand="summary").json()
    assert [item["endpoint_id"] for item in only_kling["summary"]] == [KLING]


def test_5xx_and_cancelled_queued_requests_are_not_billed(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(failure_rates={"runner_disconnected": 1.0})
    failed, result = run(fast_client, fast_emu.base_url, KLING, VIDEO)
    assert result.status_code == 503
    assert _record(fast_emu, failed["request_id"])["billed"] is False
    fast_emu.control(failure_rates={}, concurrency=1, run_time=1.0)
    submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    queued = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    fast_client.put(queued["cancel_url"])
    record = _record(fast_emu, queued["request_id"])
    assert (record["billed"], record["reason"]) == (False, "never ran")
    events = _platform(fast_emu, "billing-events").json()["billing_events"]
    assert failed["request_id"] not in {e["request_id"] for e in events}


def test_runner_422_bills_compute_seconds_unless_switched_off(
    emu: EmulatorProcess, client: httpx.Client
) -> None:
    bad = {"video_url": f"{emu.base_url}/files/koala/missing.mp4"}
    handle, result = run(client, emu.base_url, THINKSOUND, bad)
    assert result.status_code == 422
    assert _record(emu, handle["request_id"])["billed"] is True
    kling, _ = run(client, emu.base_url, KLING, bad)
    assert _record(emu, kling["request_id"])["billed"] is False  # per-video: no video, no bill
    emu.control(bill_runner_422=False)
    handle, _ = run(client, emu.base_url, THINKSOUND, bad)
    assert _record(emu, handle["request_id"])["billed"] is False


def test_bad_platform_query_is_400(fast_emu: EmulatorProcess) -> None:
    assert _platform(fast_emu, "usage", start="yesterday").status_code == 400
    assert _platform(fast_emu, "usage", timeframe="decade").status_code == 400


def test_output_seconds_are_billed_per_sample_and_hunyuan_is_billed_unpublished(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    mirelo, _ = run(
        fast_client,
        fast_emu.base_url,
        "mirelo-ai/sfx-v1.5/video-to-audio",
        {**VIDEO, "num_samples": 3, "duration": 4.5},
    )
    record = _record(fast_emu, mirelo["request_id"])
    assert (record["unit"], record["unit_quantity"]) == ("seconds", 13.5)
    assert record["cost"] == round(13.5 * 0.01, 9)
    mmaudio, _ = run(
        fast_client, fast_emu.base_url, "fal-ai/mmaudio-v2", {**VIDEO, "prompt": "x", "duration": 4}
    )
    assert _record(fast_emu, mmaudio["request_id"])["unit_quantity"] == 4.0
    hunyuan, _ = run(
        fast_client, fast_emu.base_url, "fal-ai/hunyuan-video-foley", {**VIDEO, "text_prompt": "x"}
    )
    assert _record(fast_emu, hunyuan["request_id"])["cost"] == 0.02
    prices = _platform(fast_emu, "pricing").json()["prices"]
    listed = {p["endpoint_id"] for p in prices}
    assert "fal-ai/hunyuan-video-foley" not in listed  # fal publishes no price for it
    assert {"fal-ai/controlfoley", "sonilo/v1.1/video-to-music"} <= listed
