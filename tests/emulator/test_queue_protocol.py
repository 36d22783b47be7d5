"""fal's queue protocol over real HTTP: submit, status (+ stream), result, cancel, auth, URLs."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.fal_queue import run, submit, wait_status
from tests.support.waiting import eventually_sync

KLING = "fal-ai/kling-video/video-to-audio"
THINKSOUND = "fal-ai/thinksound"
VIDEO = {"video_url": "https://example.invalid/clip.mp4"}  # fast mode never fetches


def test_submit_answers_in_queue_with_urls_under_owner_app(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    response = fast_client.post(f"{fast_emu.base_url}/{KLING}", json=VIDEO)
    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    assert uuid.UUID(request_id)
    assert response.headers["x-fal-request-id"] == request_id
    assert body["status"] == "IN_QUEUE"
    assert body["queue_position"] == 0
    assert body["gateway_request_id"] == request_id
    base = f"{fast_emu.base_url}/fal-ai/kling-video/requests/{request_id}"
    assert body["response_url"] == base
    assert body["status_url"] == f"{base}/status"
    assert body["cancel_url"] == f"{base}/cancel"


def test_completed_status_is_200_with_metrics_and_logs_only_when_asked(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    handle, result = run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    assert result.status_code == 200
    assert result.headers["x-fal-request-id"] == handle["request_id"]
    assert set(result.json()) == {"video", "prompt"}
    for flag, logs_expected in (("1", True), ("true", True), ("0", False), ("false", False)):
        response = fast_client.get(handle["status_url"], params={"logs": flag})
        assert response.status_code == 200
        assert response.headers["x-fal-request-id"] == handle["request_id"]
        body = response.json()
        assert body["status"] == "COMPLETED"
        assert isinstance(body["metrics"]["inference_time"], float)
        assert (body["logs"] is not None) is logs_expected
    assert fast_client.get(handle["status_url"]).json()["logs"] is None
    bad = fast_client.get(handle["status_url"], params={"logs": "maybe"})
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["query", "logs"]


def test_in_progress_is_202_with_timestamped_logs(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(run_time=1.5, log_interval_s=0.1)
    handle = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)

    def reporting_progress() -> httpx.Response | None:
        response = fast_client.get(handle["status_url"], params={"logs": 1})
        messages = [item["message"] for item in response.json()["logs"] or []]
        return response if any("Inference progress" in m for m in messages) else None

    response = eventually_sync(reporting_progress, what="the run's progress logs")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "IN_PROGRESS"
    assert body["logs"], body
    for item in body["logs"]:
        assert set(item) == {"message", "level", "source", "timestamp"}
        assert item["source"] == "USER"
        assert item["timestamp"].endswith("+00:00")
    assert any("Inference progress" in item["message"] for item in body["logs"])
    result_early = fast_client.get(handle["response_url"])
    assert result_early.status_code == 400
    done = wait_status(fast_client, handle["status_url"])
    assert done["metrics"]["inference_time"] >= 1.5


def test_queue_positions_are_zero_based_with_concurrency_one(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(concurrency=1, run_time=1.0)
    handles = [submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO) for _ in range(3)]
    assert [h["queue_position"] for h in handles] == [0, 0, 1]
    first, second, third = (fast_client.get(h["status_url"]) for h in handles)
    assert first.json()["status"] == "IN_PROGRESS" and first.status_code == 202
    assert second.status_code == 202
    assert (second.json()["status"], second.json()["queue_position"]) == ("IN_QUEUE", 0)
    assert (third.json()["status"], third.json()["queue_position"]) == ("IN_QUEUE", 1)
    assert fast_client.get(handles[2]["response_url"]).status_code == 400
    wait_status(fast_client, handles[0]["status_url"])
    # The next in line starts (the third moves up), while it runs for a second.
    wait_status(fast_client, handles[1]["status_url"], "IN_PROGRESS")
    assert fast_client.get(handles[2]["status_url"]).json()["queue_position"] == 0


def test_low_priority_waits_behind_normal(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(concurrency=1, run_time=1.0)
    submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    low = submit(
        fast_client, fast_emu.base_url, THINKSOUND, VIDEO, headers={"X-Fal-Queue-Priority": "low"}
    )
    normal = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    assert fast_client.get(normal["status_url"]).json()["queue_position"] == 0
    assert fast_client.get(low["status_url"]).json()["queue_position"] == 1


@pytest.mark.parametrize("suffix", ["/status", "", "/cancel", "/status/stream"])
def test_full_model_path_on_requests_urls_is_405(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, suffix: str
) -> None:
    handle = submit(fast_client, fast_emu.base_url, KLING, VIDEO)
    url = f"{fast_emu.base_url}/{KLING}/requests/{handle['request_id']}{suffix}"
    method = "PUT" if suffix == "/cancel" else "GET"
    assert fast_client.request(method, url).status_code == 405


def test_unknown_request_model_and_app_are_404(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    base = fast_emu.base_url
    missing = f"{base}/fal-ai/thinksound/requests/{uuid.uuid4()}"
    assert fast_client.get(f"{missing}/status").status_code == 404
    assert fast_client.get(missing).status_code == 404
    cancel = fast_client.put(f"{missing}/cancel")
    assert (cancel.status_code, cancel.json()) == (404, {"status": "NOT_FOUND"})
    assert fast_client.post(f"{base}/fal-ai/no-such-model", json=VIDEO).status_code == 404
    # A request is only found under its own app.
    handle = submit(fast_client, base, KLING, VIDEO)
    other_app = f"{base}/fal-ai/thinksound/requests/{handle['request_id']}/status"
    assert fast_client.get(other_app).status_code == 404


def test_auth_is_required_with_key_scheme(fast_emu: EmulatorProcess) -> None:
    url = f"{fast_emu.base_url}/{THINKSOUND}"
    assert httpx.post(url, json=VIDEO).status_code == 401
    assert httpx.post(url, json=VIDEO, headers={"Authorization": "Bearer x"}).status_code == 401
    assert httpx.post(url, json=VIDEO, headers={"Authorization": "Key"}).status_code == 401
    ok = httpx.post(url, json=VIDEO, headers={"Authorization": "Key anything"})
    assert ok.status_code == 200
    status_url = ok.json()["status_url"]
    assert httpx.get(status_url).status_code == 401
    assert httpx.put(ok.json()["cancel_url"]).status_code == 401


def test_keys_knob_restricts_accepted_keys(fast_emu: EmulatorProcess) -> None:
    fast_emu.control(keys=["alpha", fast_emu.fal_key])
    url = f"{fast_emu.base_url}/{THINKSOUND}"
    assert httpx.post(url, json=VIDEO, headers={"Authorization": "Key beta"}).status_code == 401
    assert httpx.post(url, json=VIDEO, headers={"Authorization": "Key alpha"}).status_code == 200


def test_invalid_json_body_is_422(fast_emu: EmulatorProcess, fast_client: httpx.Client) -> None:
    response = fast_client.post(
        f"{fast_emu.base_url}/{THINKSOUND}",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_cancel_queued_request_completes_it_as_cancelled(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(concurrency=1, run_time=1.0)
    running = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    queued = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    response = fast_client.put(queued["cancel_url"])
    assert (response.status_code, response.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    assert response.headers["x-fal-request-id"] == queued["request_id"]
    status = fast_client.get(queued["status_url"])
    assert status.status_code == 200
    assert status.json()["error_type"] == "client_cancelled"
    assert status.json()["metrics"] == {}
    result = fast_client.get(queued["response_url"])
    assert result.status_code == 499
    assert result.json()["error_type"] == "client_cancelled"
    assert fast_emu.job(queued["request_id"])["started_at"] is None
    again = fast_client.put(queued["cancel_url"])
    assert (again.status_code, again.json()) == (400, {"status": "ALREADY_COMPLETED"})
    assert fast_client.get(running["status_url"]).json()["status"] == "IN_PROGRESS"


def test_cancel_running_request_interrupts_it_with_499(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(run_time=5.0)
    handle = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    wait_status(fast_client, handle["status_url"], "IN_PROGRESS")
    started = time.monotonic()
    response = fast_client.put(handle["cancel_url"])
    assert (response.status_code, response.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    done = wait_status(fast_client, handle["status_url"])
    assert time.monotonic() - started < 2.0
    assert done["error_type"] == "client_cancelled"
    result = fast_client.get(handle["response_url"])
    assert result.status_code == 499
    assert result.headers["x-fal-error-type"] == "client_cancelled"


def test_cancel_completed_request_is_400(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    handle, result = run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    assert result.status_code == 200
    response = fast_client.put(handle["cancel_url"])
    assert (response.status_code, response.json()) == (400, {"status": "ALREADY_COMPLETED"})


@pytest.mark.parametrize("header", ["X-Fal-Request-Timeout", "X-Fal-Request-Start-Timeout"])
def test_start_timeout_completes_with_504_user_timeout(
    fast_emu: EmulatorProcess, fast_client: httpx.Client, header: str
) -> None:
    fast_emu.control(concurrency=1, run_time=2.0)
    submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    late = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO, headers={header: "0.5"})
    done = wait_status(fast_client, late["status_url"], timeout=5)
    assert done["error_type"] == "request_timeout"
    result = fast_client.get(late["response_url"])
    assert result.status_code == 504
    assert result.json() == {"detail": "Request timed out", "error_type": "request_timeout"}
    assert result.headers["x-fal-request-timeout-type"] == "user"
    assert result.headers["x-fal-request-id"] == late["request_id"]


def test_start_timeout_does_not_fire_once_running(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(run_time=1.0)
    handle = submit(
        fast_client, fast_emu.base_url, THINKSOUND, VIDEO, headers={"X-Fal-Request-Timeout": "0.3"}
    )
    wait_status(fast_client, handle["status_url"], timeout=5)
    assert fast_client.get(handle["response_url"]).status_code == 200


def test_status_stream_sends_events_and_keepalives_then_closes(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(concurrency=1, run_time=1.0, sse_keepalive_s=0.15, log_interval_s=10)
    submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    handle = submit(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    lines = []
    with fast_client.stream(
        "GET", f"{handle['status_url']}/stream", params={"logs": 1}, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-fal-request-id"] == handle["request_id"]
        lines = [line for line in response.iter_lines() if line]
    import json

    events = [json.loads(line[5:]) for line in lines if line.startswith("data:")]
    comments = [line for line in lines if line.startswith(":")]
    statuses = [event["status"] for event in events]
    assert statuses[0] == "IN_QUEUE" and statuses[-1] == "COMPLETED"
    assert "IN_PROGRESS" in statuses
    assert events[-1]["metrics"]["inference_time"] > 0
    assert len(comments) >= 3  # keep-alives while nothing changed


def test_results_expire_and_then_answer_404(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    fast_emu.control(result_ttl_s=1.0)
    handle, result = run(fast_client, fast_emu.base_url, THINKSOUND, VIDEO)
    assert result.status_code == 200
    eventually_sync(
        lambda: fast_client.get(handle["status_url"]).status_code == 404,
        what="the result's expiry",
    )
    assert fast_client.get(handle["response_url"]).status_code == 404
    assert fast_client.put(handle["cancel_url"]).json() == {"status": "NOT_FOUND"}


def test_request_log_lists_every_request(
    fast_emu: EmulatorProcess, fast_client: httpx.Client
) -> None:
    assert fast_emu.requests() == []
    handle, _ = run(fast_client, fast_emu.base_url, KLING, VIDEO)
    log = fast_emu.requests(request_id=handle["request_id"])
    methods = [(entry["method"], entry["path"].rsplit("/", 1)[-1]) for entry in log]
    assert methods[0] == ("POST", "video-to-audio")
    assert ("GET", "status") in methods
    assert methods[-1] == ("GET", handle["request_id"])
    assert all(entry["model"] == KLING for entry in log)
    assert fast_emu.submits(KLING)[0]["status"] == 200
    assert fast_emu.submits(THINKSOUND) == []
