"""Fault knobs: each has a test showing its effect. Webhook knobs are in test_webhooks.py."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.fal_queue import run, submit, wait_status

THINKSOUND = "fal-ai/thinksound"
KLING = "fal-ai/kling-video/video-to-audio"
VIDEO = {"video_url": "https://example.invalid/clip.mp4"}


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        ("runner_disconnected", 503),
        ("runner_scheduling_failure", 503),
        ("runner_incomplete_response", 502),
        ("runner_server_error", 500),
        ("internal_error", 500),
        ("request_timeout", 504),
        ("bad_request", 400),
    ],
)
def test_failure_rates_complete_requests_with_the_error(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, error_type: str, code: int
) -> None:
    fast_emu.control(failure_rates={error_type: 1.0})
    handle = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    status = wait_status(fast_client, handle["status_url"])
    assert status["error_type"] == error_type and status["error"]
    result = fast_client.get(handle["response_url"])
    assert result.status_code == code
    assert result.json()["error_type"] == error_type
    assert result.headers["x-fal-error-type"] == error_type
    assert result.headers["x-fal-request-id"] == handle["request_id"]


def test_model_error_can_be_injected(fast_emu: EmulatorProcess, fast_client: httpx.Client) -> None:
    fast_emu.control(failure_rates={"content_policy_violation": 1.0})
    _, result = run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    assert result.status_code == 422
    assert result.json()["detail"][0]["type"] == "content_policy_violation"


def test_failure_rates_are_seeded_and_reproducible(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    def codes() -> list[int]:
        fast_emu.reset(seed=42)
        fast_emu.control(failure_rates={"runner_disconnected": 0.5})
        return [
            run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)[1].status_code for _ in range(10)
        ]

    first = codes()
    assert set(first) == {200, 503}
    assert codes() == first


@pytest.mark.parametrize("code", [429, 502, 503])
def test_ingress_errors_come_from_nginx_and_create_nothing(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, code: int
) -> None:
    fast_emu.control(ingress_error_rates={code: 1.0})
    response = fast_client.post(f"{fast_emu.base_url}/{THINKSOUND}", json=VIDEO)
    assert response.status_code == code
    assert "x-fal-request-id" not in response.headers
    assert "nginx" in response.text
    assert response.headers["content-type"].startswith("text/html")
    (entry,) = fast_emu.submits()
    assert (entry["outcome"], entry["request_id"]) == ("ingress_error", None)
    assert fast_emu.state()["requests"]["known"] == 0


def test_ambiguous_submit_creates_the_request_but_drops_the_answer(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(ambiguous_submit_rate=1.0, ambiguous_submit_hold_s=0.3)
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        fast_client.post(f"{fast_emu.base_url}/{KLING}", json=VIDEO)
    assert time.monotonic() - started >= 0.25
    (entry,) = fast_emu.submits()
    assert entry["outcome"] == "dropped" and entry["request_id"]
    job = fast_emu.job(entry["request_id"])
    assert job["status"] == "COMPLETED" and job["result_status"] == 200
    assert job["usage"]["billed"] is True  # created, run and billed: the double-spend trap
    fast_emu.control(ambiguous_submit_rate=0.0)
    assert fast_client.post(f"{fast_emu.base_url}/{KLING}", json=VIDEO).status_code == 200


def test_queue_wait_keeps_requests_in_queue(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(queue_wait=1.0)
    started = time.monotonic()
    handle = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    status = fast_client.get(handle["status_url"]).json()
    assert (status["status"], status["queue_position"]) == ("IN_QUEUE", 0)
    wait_status(fast_client, handle["status_url"], timeout=5)
    assert time.monotonic() - started >= 1.0
    job = fast_emu.job(handle["request_id"])
    assert job["started_at"] > job["submitted_at"]


def test_uniform_run_time_and_per_model_override(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(run_time="0.2..0.4", run_time_by_model={KLING: 0})
    handle, _ = run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    seconds = fast_client.get(handle["status_url"]).json()["metrics"]["inference_time"]
    assert 0.2 <= seconds < 1.0
    kling, _ = run(fast_client, fast_emu.base_url, "fal-ai/kling-video/video-to-audio", VIDEO)
    assert fast_client.get(kling["status_url"]).json()["metrics"]["inference_time"] < 0.1


def test_account_locked_is_403(fast_emu: EmulatorProcess, fast_client: httpx.Client) -> None:
    fast_emu.control(account_locked=True)
    response = fast_client.post(f"{fast_emu.base_url}/{THINKSOUND}", json=VIDEO)
    assert response.status_code == 403
    assert response.json()["detail"].startswith("User is locked")


def test_fast_mode_answers_at_once_with_the_cached_output(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    first, a = run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    _, b = run(fast_client, fast_emu.base_url, THINKSOUND, {"video_url": "y", "prompt": "rain"})
    assert a.json()["video"] == b.json()["video"]
    assert b.json()["prompt"] == "rain"
    assert fast_client.get(first["status_url"]).json()["metrics"]["inference_time"] < 0.05


def test_control_rejects_unknown_or_invalid_knobs(fast_emu: EmulatorProcess) -> None:
    url = f"{fast_emu.base_url}/_emulator/control"
    headers = fast_emu.admin_headers
    assert httpx.post(url, json={"nope": 1}, headers=headers).status_code == 422
    assert httpx.post(url, json={"concurrency": 0}, headers=headers).status_code == 422
    bad_type = {"failure_rates": {"not_a_type": 0.1}}
    assert httpx.post(url, json=bad_type, headers=headers).status_code == 422
    assert httpx.post(url, json={"concurrency": 2}).status_code == 401
    key_auth = {"Authorization": f"Key {fast_emu.admin_key}"}
    assert httpx.post(url, json={"concurrency": 2}, headers=key_auth).status_code == 200
