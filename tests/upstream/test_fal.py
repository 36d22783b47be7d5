"""FalClient against a faked network edge (httpx.MockTransport): the wire it sends, how it
classifies failures, and which failures it retries. Nothing of our own code is mocked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from structlog.testing import capture_logs

from app.upstream import (
    AmbiguousSubmitError,
    CancelOutcome,
    FalClient,
    OutputTooLargeError,
    OutputUnavailableError,
    PermanentUpstreamError,
    QueueState,
    ResultCancelled,
    ResultFailed,
    ResultNotFound,
    ResultOk,
    ResultPending,
    RetryPolicy,
    TransientUpstreamError,
    UploadNotReplayableError,
    UpstreamAccountLockedError,
    UpstreamAuthError,
    UpstreamNotFoundError,
    UpstreamStartTimeoutError,
    UpstreamUntrustedURLError,
    UpstreamValidationError,
)
from tests.upstream.conftest import CDN, KEY, QUEUE, REST, Recorder

MakeClient = Callable[..., FalClient]
ENDPOINT = "fal-ai/kling-video/video-to-audio"
RID = "0b5c7f2e-3d1a-4c1e-9f4e-2f1d2b3c4d5e"
BASE = f"{QUEUE}/fal-ai/kling-video/requests/{RID}"
SUBMITTED = {
    "status": "IN_QUEUE",
    "request_id": RID,
    "response_url": BASE,
    "status_url": f"{BASE}/status",
    "cancel_url": f"{BASE}/cancel",
    "queue_position": 0,
}
FAL_ID = {"x-fal-request-id": RID}


def replies(*items: httpx.Response | Exception):  # type: ignore[no-untyped-def]
    """A handler answering (or failing) with ``items`` in order, the last one repeated."""
    queue = list(items)

    async def handler(request: httpx.Request) -> httpx.Response:
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def ok_submit() -> httpx.Response:
    return httpx.Response(200, json=SUBMITTED, headers=FAL_ID)


def nginx(status: int) -> httpx.Response:
    return httpx.Response(status, text=f"<html><center>{status}</center><hr>nginx</html>")


# --- submit: the wire --------------------------------------------------------------------------


async def test_submit_sends_full_endpoint_key_and_fal_headers(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client = make_client(replies(ok_submit()))
    webhook = "https://gw.example/v1/webhooks/fal?token=a.b&x=1"
    submitted = await client.submit(
        ENDPOINT,
        {"video_url": "https://v/clip.mp4", "seed": 3},
        webhook_url=webhook,
        start_timeout_s=900,
        store_io=False,
        priority="low",
        output_expiration_s=3600,
    )

    assert submitted.request_id == RID
    assert submitted.status_url == f"{BASE}/status"
    assert submitted.response_url == BASE
    assert submitted.cancel_url == f"{BASE}/cancel"
    assert submitted.queue_position == 0
    (request,) = recorder.requests
    assert request.method == "POST"
    assert request.url.path == f"/{ENDPOINT}"
    assert parse_qs(request.url.query.decode()) == {"fal_webhook": [webhook]}
    assert request.headers["authorization"] == f"Key {KEY}"
    assert request.headers["x-fal-request-timeout"] == "900.0"
    assert request.headers["x-fal-request-start-timeout"] == "900.0"
    assert request.headers["x-fal-no-retry"] == "1"
    assert request.headers["x-fal-store-io"] == "0"
    assert request.headers["x-fal-queue-priority"] == "low"
    assert json.loads(request.headers["x-fal-object-lifecycle-preference"]) == {
        "expiration_duration_seconds": 3600
    }
    assert json.loads(recorder.bodies[0]) == {"video_url": "https://v/clip.mp4", "seed": 3}


async def test_submit_without_options_sends_no_optional_headers(
    make_client: MakeClient, recorder: Recorder
) -> None:
    await make_client(replies(ok_submit())).submit(ENDPOINT, {}, no_retry=False)
    headers = recorder.requests[0].headers
    for name in (
        "x-fal-request-timeout",
        "x-fal-no-retry",
        "x-fal-store-io",
        "x-fal-queue-priority",
    ):
        assert name not in headers
    assert recorder.requests[0].url.query == b""


@pytest.mark.parametrize("bad", ["", "fal-ai", "/fal-ai/x", "fal-ai/../x", "fal-ai/x?y=1"])
async def test_submit_refuses_malformed_endpoint_ids(make_client: MakeClient, bad: str) -> None:
    with pytest.raises(ValueError, match="endpoint id"):
        await make_client(replies(ok_submit())).submit(bad, {})


async def test_submit_refuses_start_timeouts_fal_would_reject(make_client: MakeClient) -> None:
    with pytest.raises(ValueError, match="start_timeout_s"):
        await make_client(replies(ok_submit())).submit(ENDPOINT, {}, start_timeout_s=1)


# --- submit: retried only where no request can exist -------------------------------------------


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("refused"), httpx.ConnectTimeout("t"), httpx.PoolTimeout("t")]
)
async def test_submit_failures_before_sending_are_retried_with_backoff(
    make_client: MakeClient, recorder: Recorder, failure: Exception
) -> None:
    client = make_client(replies(failure, failure, ok_submit()))
    submitted = await client.submit(ENDPOINT, {})
    assert submitted.request_id == RID
    assert len(recorder.requests) == 3
    assert recorder.sleeps == [0.5, 1.0]  # full-jitter ceilings (the test RNG picks the top)


async def test_submit_connect_errors_exhaust_into_transient(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client = make_client(replies(httpx.ConnectError("refused")))
    with pytest.raises(TransientUpstreamError) as caught:
        await client.submit(ENDPOINT, {})
    assert caught.value.attempts == 4
    assert caught.value.code == "upstream_unavailable"
    assert len(recorder.requests) == 4
    assert recorder.sleeps == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("no answer"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("server disconnected"),
        httpx.WriteTimeout("t"),
        httpx.WriteError("broken pipe"),
    ],
)
async def test_submit_failures_after_sending_are_ambiguous_and_never_retried(
    make_client: MakeClient, recorder: Recorder, failure: Exception
) -> None:
    client = make_client(replies(failure, ok_submit()))
    with pytest.raises(AmbiguousSubmitError) as caught:
        await client.submit(ENDPOINT, {})
    assert caught.value.code == "upstream_ambiguous_submit"
    assert len(recorder.requests) == 1
    assert recorder.sleeps == []


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_submit_ingress_errors_without_request_id_are_retried(
    make_client: MakeClient, recorder: Recorder, status: int
) -> None:
    client = make_client(replies(nginx(status), ok_submit()))
    assert (await client.submit(ENDPOINT, {})).request_id == RID
    assert len(recorder.requests) == 2


async def test_submit_5xx_from_fal_itself_is_ambiguous_with_its_request_id(
    make_client: MakeClient, recorder: Recorder
) -> None:
    answer = httpx.Response(
        503,
        json={"detail": "Runner connection error", "error_type": "runner_connection_error"},
        headers={**FAL_ID, "X-Fal-Retryable": "true"},
    )
    client = make_client(replies(answer, ok_submit()))
    with pytest.raises(AmbiguousSubmitError) as caught:
        await client.submit(ENDPOINT, {})
    assert caught.value.request_id == RID
    assert caught.value.status_code == 503
    assert caught.value.error_type == "runner_connection_error"
    assert caught.value.retryable_hint is True
    assert len(recorder.requests) == 1


async def test_submit_500_without_request_id_is_ambiguous(
    make_client: MakeClient, recorder: Recorder
) -> None:
    with pytest.raises(AmbiguousSubmitError):
        await make_client(replies(nginx(500), ok_submit())).submit(ENDPOINT, {})
    assert len(recorder.requests) == 1


async def test_submit_ingress_504_ambiguous_under_a_cautious_policy(
    make_client: MakeClient, recorder: Recorder
) -> None:
    cautious = RetryPolicy(ingress_gateway_errors_retryable=False)
    client = make_client(replies(nginx(504), ok_submit()), submit_policy=cautious)
    with pytest.raises(AmbiguousSubmitError):
        await client.submit(ENDPOINT, {})
    assert len(recorder.requests) == 1


async def test_submit_429_honours_retry_after_seconds(
    make_client: MakeClient, recorder: Recorder
) -> None:
    limited = httpx.Response(429, headers={"Retry-After": "2"})
    client = make_client(replies(limited, ok_submit()))
    await client.submit(ENDPOINT, {})
    assert recorder.sleeps == [2.0]


async def test_submit_retry_after_as_http_date(make_client: MakeClient, recorder: Recorder) -> None:
    limited = httpx.Response(503, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"})
    await make_client(replies(limited, ok_submit())).submit(ENDPOINT, {})
    assert recorder.sleeps == [0.0]  # a date in the past means "now"


async def test_submit_retry_after_beyond_cap_hands_the_wait_to_the_caller(
    make_client: MakeClient, recorder: Recorder
) -> None:
    limited = httpx.Response(429, headers={"Retry-After": "600"})
    with pytest.raises(TransientUpstreamError) as caught:
        await make_client(replies(limited, ok_submit())).submit(ENDPOINT, {})
    assert caught.value.retry_after == 600.0
    assert caught.value.status_code == 429
    assert len(recorder.requests) == 1
    assert recorder.sleeps == []


async def test_submit_not_retried_when_fal_says_not_retryable(
    make_client: MakeClient, recorder: Recorder
) -> None:
    refused = httpx.Response(503, text="nginx", headers={"X-Fal-Needs-Retry": "false"})
    with pytest.raises(TransientUpstreamError):
        await make_client(replies(refused, ok_submit())).submit(ENDPOINT, {})
    assert len(recorder.requests) == 1


async def test_submit_unreadable_success_is_ambiguous(make_client: MakeClient) -> None:
    garbled = httpx.Response(200, json={"request_id": RID}, headers=FAL_ID)
    with pytest.raises(AmbiguousSubmitError) as caught:
        await make_client(replies(garbled)).submit(ENDPOINT, {})
    assert caught.value.request_id == RID


# --- submit: permanent answers --------------------------------------------------------------------


async def test_submit_401_is_an_auth_error_logged_loudly(make_client: MakeClient) -> None:
    answer = httpx.Response(401, json={"detail": "Invalid key"})
    with capture_logs() as logs, pytest.raises(UpstreamAuthError) as caught:
        await make_client(replies(answer)).submit(ENDPOINT, {})
    assert caught.value.code == "upstream_auth"
    assert caught.value.status_code == 401
    loud = [entry for entry in logs if entry["log_level"] == "error"]
    assert loud and loud[0]["code"] == "upstream_auth"
    assert KEY not in json.dumps(logs, default=str)


async def test_submit_403_locked_account(make_client: MakeClient) -> None:
    answer = httpx.Response(
        403, json={"detail": "User is locked. Reason: Exhausted balance. Top up your balance."}
    )
    with capture_logs() as logs, pytest.raises(UpstreamAccountLockedError) as caught:
        await make_client(replies(answer)).submit(ENDPOINT, {})
    assert caught.value.code == "upstream_account_locked"
    assert "Exhausted balance" in caught.value.detail
    assert any(entry["log_level"] == "error" for entry in logs)


async def test_submit_403_without_lock_is_an_auth_error(make_client: MakeClient) -> None:
    with pytest.raises(UpstreamAuthError):
        await make_client(replies(httpx.Response(403, json={"detail": "Forbidden"}))).submit(
            ENDPOINT, {}
        )


async def test_submit_422_carries_fal_validation_detail(make_client: MakeClient) -> None:
    detail = [{"loc": ["body", "video_url"], "msg": "Field required", "type": "missing"}]
    answer = httpx.Response(422, json={"detail": detail}, headers=FAL_ID)
    with pytest.raises(UpstreamValidationError) as caught:
        await make_client(replies(answer)).submit(ENDPOINT, {})
    assert caught.value.detail == detail
    assert caught.value.code == "upstream_validation"
    assert isinstance(caught.value, PermanentUpstreamError)


async def test_submit_unknown_endpoint_is_not_found(make_client: MakeClient) -> None:
    with pytest.raises(UpstreamNotFoundError):
        await make_client(replies(httpx.Response(404, json={"detail": "Not found"}))).submit(
            ENDPOINT, {}
        )


async def test_submit_user_start_timeout_is_permanent(make_client: MakeClient) -> None:
    answer = httpx.Response(
        504,
        json={"detail": "Request timed out", "error_type": "request_timeout"},
        headers={**FAL_ID, "X-Fal-Request-Timeout-Type": "user"},
    )
    with pytest.raises(UpstreamStartTimeoutError) as caught:
        await make_client(replies(answer)).submit(ENDPOINT, {})
    assert caught.value.error_type == "request_timeout"


async def test_each_call_is_logged_with_endpoint_status_request_id_attempt_latency(
    make_client: MakeClient,
) -> None:
    with capture_logs() as logs:
        await make_client(replies(nginx(502), ok_submit())).submit(ENDPOINT, {})
    calls = [entry for entry in logs if entry["event"] == "upstream.call"]
    assert [(c["status"], c["attempt"], c["request_id"]) for c in calls] == [
        (502, 1, None),
        (200, 2, RID),
    ]
    assert all(c["endpoint"] == ENDPOINT and c["latency_ms"] >= 0 for c in calls)


# --- status -------------------------------------------------------------------------------------


async def test_status_uses_the_stored_url_verbatim(
    make_client: MakeClient, recorder: Recorder
) -> None:
    answer = httpx.Response(202, json={"status": "IN_QUEUE", "queue_position": 3}, headers=FAL_ID)
    status = await make_client(replies(answer)).status(f"{BASE}/status")
    assert status.status is QueueState.IN_QUEUE
    assert status.queue_position == 3
    assert status.request_id == RID
    (request,) = recorder.requests
    assert str(request.url) == f"{BASE}/status?logs=1"
    assert request.headers["authorization"] == f"Key {KEY}"


async def test_status_completed_carries_logs_metrics_and_error(make_client: MakeClient) -> None:
    body = {
        "status": "COMPLETED",
        "logs": [
            {
                "message": "step 1",
                "level": "INFO",
                "source": "USER",
                "timestamp": "2026-01-01T00:00:00Z",
            },
            {"message": "odd", "level": "STDERR", "timestamp": "yesterday"},
        ],
        "metrics": {"inference_time": 12.5},
        "error": "Runner disconnected",
        "error_type": "runner_disconnected",
    }
    status = await make_client(replies(httpx.Response(200, json=body))).status(
        f"{BASE}/status", logs=True
    )
    assert status.completed and status.failed
    assert status.inference_time == 12.5
    assert [log.message for log in status.logs] == ["step 1", "odd"]
    assert status.logs[0].timestamp is not None and status.logs[1].timestamp is None
    assert status.error_type == "runner_disconnected"
    assert status.raw == body


async def test_status_without_logs_asks_for_none(
    make_client: MakeClient, recorder: Recorder
) -> None:
    answer = httpx.Response(202, json={"status": "IN_PROGRESS", "logs": None})
    status = await make_client(replies(answer)).status(f"{BASE}/status?x=1", logs=False)
    assert status.logs == []
    assert recorder.requests[0].url.params["logs"] == "0"
    assert recorder.requests[0].url.params["x"] == "1"


async def test_status_read_timeouts_are_retried(
    make_client: MakeClient, recorder: Recorder
) -> None:
    answer = httpx.Response(202, json={"status": "IN_PROGRESS"})
    client = make_client(replies(httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x"), answer))
    assert (await client.status(f"{BASE}/status")).status is QueueState.IN_PROGRESS
    assert len(recorder.requests) == 3


async def test_status_5xx_from_fal_is_retried_then_transient(
    make_client: MakeClient, recorder: Recorder
) -> None:
    answer = httpx.Response(500, json={"detail": "oops"}, headers=FAL_ID)
    with pytest.raises(TransientUpstreamError) as caught:
        await make_client(replies(answer)).status(f"{BASE}/status")
    assert caught.value.attempts == 3
    assert len(recorder.requests) == 3


async def test_status_unknown_request_is_not_found(make_client: MakeClient) -> None:
    with pytest.raises(UpstreamNotFoundError):
        await make_client(replies(httpx.Response(404, json={"detail": "Not found"}))).status(
            f"{BASE}/status"
        )


async def test_stored_urls_outside_the_fal_hosts_never_get_the_key(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client = make_client(replies(httpx.Response(200, json={"status": "COMPLETED"})))
    with pytest.raises(UpstreamUntrustedURLError):
        await client.status("https://evil.example/fal-ai/kling-video/requests/x/status")
    with pytest.raises(UpstreamUntrustedURLError):
        await client.result("http://queue.test/fal-ai/kling-video/requests/x")  # scheme differs
    assert recorder.requests == []


async def test_trusted_origins_extend_where_the_key_may_go(make_client: MakeClient) -> None:
    client = make_client(
        replies(httpx.Response(202, json={"status": "IN_QUEUE"})),
        trusted_origins=["https://queue.backup.test"],
    )
    status = await client.status("https://queue.backup.test/fal-ai/x/requests/1/status")
    assert status.status is QueueState.IN_QUEUE


# --- result -------------------------------------------------------------------------------------


async def test_result_success(make_client: MakeClient) -> None:
    output = {"video": {"url": "https://cdn/v.mp4"}, "audio": {"url": "https://cdn/a.mp3"}}
    outcome = await make_client(replies(httpx.Response(200, json=output, headers=FAL_ID))).result(
        BASE
    )
    assert outcome == ResultOk(output=output, request_id=RID)


async def test_result_model_422_is_a_final_failure(make_client: MakeClient) -> None:
    detail = [
        {"loc": ["body", "video_url"], "msg": "Video too long", "type": "video_duration_too_long"}
    ]
    answer = httpx.Response(422, json={"detail": detail}, headers=FAL_ID)
    outcome = await make_client(replies(answer)).result(BASE)
    assert isinstance(outcome, ResultFailed)
    assert outcome.status_code == 422
    assert outcome.detail == detail
    assert outcome.message == "Video too long"
    assert outcome.retryable is False


async def test_result_infrastructure_failure_is_final_not_retried(
    make_client: MakeClient, recorder: Recorder
) -> None:
    answer = httpx.Response(
        503,
        json={"detail": "Runner disconnected", "error_type": "runner_disconnected"},
        headers={**FAL_ID, "X-Fal-Error-Type": "runner_disconnected", "X-Fal-Retryable": "true"},
    )
    outcome = await make_client(replies(answer)).result(BASE)
    assert isinstance(outcome, ResultFailed)
    assert outcome.error_type == "runner_disconnected"
    assert outcome.retryable is True
    assert len(recorder.requests) == 1


async def test_result_start_timeout_is_not_retryable(make_client: MakeClient) -> None:
    answer = httpx.Response(
        504,
        json={"detail": "Request timed out", "error_type": "request_timeout"},
        headers={**FAL_ID, "X-Fal-Request-Timeout-Type": "user"},
    )
    outcome = await make_client(replies(answer)).result(BASE)
    assert isinstance(outcome, ResultFailed) and outcome.retryable is False


async def test_result_error_type_read_from_header_when_body_lacks_it(
    make_client: MakeClient,
) -> None:
    answer = httpx.Response(
        502, text="bad", headers={**FAL_ID, "X-Fal-Error-Type": "runner_incomplete_response"}
    )
    outcome = await make_client(replies(answer)).result(BASE)
    assert isinstance(outcome, ResultFailed)
    assert outcome.error_type == "runner_incomplete_response"
    assert outcome.body == "bad"


async def test_result_ingress_error_is_retried(make_client: MakeClient, recorder: Recorder) -> None:
    client = make_client(replies(nginx(502), httpx.Response(200, json={"x": 1})))
    assert isinstance(await client.result(BASE), ResultOk)
    assert len(recorder.requests) == 2


async def test_result_before_completion_is_pending(make_client: MakeClient) -> None:
    answer = httpx.Response(400, json={"detail": "Request is still in progress"}, headers=FAL_ID)
    assert isinstance(await make_client(replies(answer)).result(BASE), ResultPending)


async def test_result_model_400_with_error_type_is_a_failure(make_client: MakeClient) -> None:
    answer = httpx.Response(
        400, json={"detail": "Bad request", "error_type": "bad_request"}, headers=FAL_ID
    )
    outcome = await make_client(replies(answer)).result(BASE)
    assert isinstance(outcome, ResultFailed) and outcome.error_type == "bad_request"


async def test_result_cancelled(make_client: MakeClient) -> None:
    answer = httpx.Response(
        499,
        json={"detail": "Request was cancelled by the client", "error_type": "client_cancelled"},
        headers=FAL_ID,
    )
    outcome = await make_client(replies(answer)).result(BASE)
    assert isinstance(outcome, ResultCancelled)
    assert outcome.error_type == "client_cancelled"


async def test_result_expired(make_client: MakeClient) -> None:
    outcome = await make_client(replies(httpx.Response(404, json={"detail": "Not found"}))).result(
        BASE
    )
    assert isinstance(outcome, ResultNotFound)


async def test_result_auth_failure_raises(make_client: MakeClient) -> None:
    with pytest.raises(UpstreamAuthError):
        await make_client(replies(httpx.Response(401, json={"detail": "no"}))).result(BASE)


# --- cancel -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (202, {"status": "CANCELLATION_REQUESTED"}, CancelOutcome.CANCELLATION_REQUESTED),
        (400, {"status": "ALREADY_COMPLETED"}, CancelOutcome.ALREADY_COMPLETED),
        (404, {"status": "NOT_FOUND"}, CancelOutcome.NOT_FOUND),
        (200, {"status": "OK"}, CancelOutcome.OK),
        (202, {}, CancelOutcome.CANCELLATION_REQUESTED),
        (400, {"detail": "x"}, CancelOutcome.ALREADY_COMPLETED),
    ],
)
async def test_cancel_outcomes(
    make_client: MakeClient,
    recorder: Recorder,
    status: int,
    body: dict[str, str],
    outcome: CancelOutcome,
) -> None:
    result = await make_client(replies(httpx.Response(status, json=body))).cancel(f"{BASE}/cancel")
    assert result is outcome
    assert recorder.requests[0].method == "PUT"
    assert str(recorder.requests[0].url) == f"{BASE}/cancel"


async def test_cancel_is_retried_after_a_lost_answer(
    make_client: MakeClient, recorder: Recorder
) -> None:
    client = make_client(
        replies(
            httpx.ReadTimeout("lost"),
            httpx.Response(202, json={"status": "CANCELLATION_REQUESTED"}),
        )
    )
    assert await client.cancel(f"{BASE}/cancel") is CancelOutcome.CANCELLATION_REQUESTED
    assert len(recorder.requests) == 2


# --- upload -------------------------------------------------------------------------------------


def token_reply() -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "token": "cdn-token",
            "token_type": "Bearer",
            "base_url": "https://real-cdn.example",
            "expires_at": "2999-01-01T00:00:00+00:00",
        },
    )


def routes(table: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]]):  # type: ignore[no-untyped-def]
    async def handler(request: httpx.Request) -> httpx.Response:
        key = (request.method, f"{request.url.scheme}://{request.url.host}{request.url.path}")
        if key not in table:
            return httpx.Response(599, text=f"unexpected {key}")
        return table[key](request)

    return handler


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(bytes(range(256)) * 1000)  # 256 KB
    return path


async def test_upload_uses_the_cdn_flow_streaming_the_file(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(
                    200, json={"access_url": "https://cdn.test/files/abc/clip.mp4"}
                ),
            }
        ),
        chunk_size=64 * 1024,
    )
    url = await client.upload_file(video, "video/mp4", "clip.mp4")
    assert url == "https://cdn.test/files/abc/clip.mp4"

    token_request, upload_request = recorder.requests
    assert token_request.url.params["storage_type"] == "fal-cdn-v3"
    assert token_request.headers["authorization"] == f"Key {KEY}"
    assert json.loads(recorder.bodies[0]) == {}
    assert upload_request.headers["authorization"] == "Bearer cdn-token"
    assert upload_request.headers["x-fal-file-name"] == "clip.mp4"
    assert upload_request.headers["content-type"] == "video/mp4"
    assert upload_request.headers["content-length"] == str(video.stat().st_size)
    assert recorder.bodies[1] == video.read_bytes()
    assert len(recorder.body_chunks[1]) == 4  # streamed in 64 KB chunks, never read whole


async def test_upload_token_is_reused_until_it_expires(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(
                    200, json={"access_url": "https://cdn.test/files/1"}
                ),
            }
        )
    )
    await client.upload_file(video, "video/mp4", "a.mp4")
    await client.upload_file(video, "video/mp4", "b.mp4")
    assert [r.url.path for r in recorder.requests] == [
        "/storage/auth/token",
        "/files/upload",
        "/files/upload",
    ]


async def test_upload_streams_an_async_iterable(
    make_client: MakeClient, recorder: Recorder
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(5):
            yield bytes([index]) * 1000

    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(
                    200, json={"access_url": "https://cdn.test/files/s"}
                ),
            }
        )
    )
    assert await client.upload_file(chunks(), "audio/mpeg", "a.mp3") == "https://cdn.test/files/s"
    assert recorder.body_chunks[1] == [bytes([i]) * 1000 for i in range(5)]
    assert recorder.requests[1].headers.get("transfer-encoding") == "chunked"


def initiate_routes(
    status_of_cdn: int,
) -> dict[tuple[str, str], Callable[[httpx.Request], httpx.Response]]:
    return {
        ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
        ("POST", f"{CDN}/files/upload"): lambda r: httpx.Response(status_of_cdn),
        ("POST", f"{REST}/storage/upload/initiate"): lambda r: httpx.Response(
            200,
            json={
                "upload_url": "https://storage.test/bucket/x?X-Goog-Signature=sig",
                "file_url": "https://storage.test/files/x.mp4",
            },
        ),
        ("PUT", "https://storage.test/bucket/x"): lambda r: httpx.Response(200),
    }


@pytest.mark.parametrize("status", [404, 405])
async def test_upload_falls_back_to_initiate_and_put(
    make_client: MakeClient, recorder: Recorder, video: Path, status: int
) -> None:
    client = make_client(routes(initiate_routes(status)))
    url = await client.upload_file(video, "video/mp4", "clip.mp4")
    assert url == "https://storage.test/files/x.mp4"
    initiate, put = recorder.requests[-2:]
    assert initiate.headers["authorization"] == f"Key {KEY}"
    assert json.loads(recorder.bodies[-2]) == {"file_name": "clip.mp4", "content_type": "video/mp4"}
    assert "authorization" not in put.headers  # a signed URL never gets the fal key
    assert put.headers["content-type"] == "video/mp4"
    assert recorder.bodies[-1] == video.read_bytes()


async def test_upload_falls_back_when_the_token_endpoint_is_missing(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    table = initiate_routes(200)
    table[("POST", f"{REST}/storage/auth/token")] = lambda r: httpx.Response(404)
    url = await make_client(routes(table)).upload_file(video, "video/mp4", "clip.mp4")
    assert url == "https://storage.test/files/x.mp4"
    assert [r.url.path for r in recorder.requests] == [
        "/storage/auth/token",
        "/storage/upload/initiate",
        "/bucket/x",
    ]


async def test_upload_fallback_refuses_a_consumed_one_shot_stream(make_client: MakeClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"once"

    with pytest.raises(UploadNotReplayableError):
        await make_client(routes(initiate_routes(405))).upload_file(chunks(), "video/mp4", "c.mp4")


async def test_upload_refreshes_a_revoked_cdn_token_once(
    make_client: MakeClient, recorder: Recorder, video: Path
) -> None:
    answers = iter([httpx.Response(401), httpx.Response(200, json={"access_url": "https://u"})])
    client = make_client(
        routes(
            {
                ("POST", f"{REST}/storage/auth/token"): lambda r: token_reply(),
                ("POST", f"{CDN}/files/upload"): lambda r: next(answers),
            }
        )
    )
    assert await client.upload_file(video, "video/mp4", "clip.mp4") == "https://u"
    assert [r.url.path for r in recorder.requests].count("/storage/auth/token") == 2


# --- download -----------------------------------------------------------------------------------


async def test_download_streams_to_a_path_without_credentials(
    make_client: MakeClient, recorder: Recorder, tmp_path: Path
) -> None:
    data = b"\x00\x01" * 50_000
    client = make_client(
        routes(
            {
                ("GET", "https://out.test/files/a.mp4"): lambda r: httpx.Response(
                    302, headers={"Location": "https://store.test/real/a.mp4"}
                ),
                ("GET", "https://store.test/real/a.mp4"): lambda r: httpx.Response(
                    200, content=data, headers={"Content-Type": "video/mp4"}
                ),
            }
        )
    )
    dest = tmp_path / "out" / "a.mp4"
    dest.parent.mkdir()
    size, content_type = await client.download(
        "https://out.test/files/a.mp4", dest, max_bytes=10**6
    )
    assert (size, content_type) == (len(data), "video/mp4")
    assert dest.read_bytes() == data
    assert not (tmp_path / "out" / "a.mp4.part").exists()
    assert all("authorization" not in r.headers for r in recorder.requests)


async def test_download_to_a_chunk_sink(make_client: MakeClient) -> None:
    received: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        received.append(chunk)

    client = make_client(
        replies(httpx.Response(200, content=b"abc", headers={"Content-Type": "audio/mpeg"}))
    )
    assert await client.download("https://out.test/a.mp3", sink, max_bytes=10) == (3, "audio/mpeg")
    assert b"".join(received) == b"abc"


async def test_download_refuses_a_declared_size_over_the_cap(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = make_client(replies(httpx.Response(200, content=b"x" * 100)))
    with pytest.raises(OutputTooLargeError):
        await client.download("https://out.test/a", tmp_path / "a", max_bytes=99)
    assert list(tmp_path.iterdir()) == []


async def test_download_stops_a_stream_that_grows_past_the_cap(
    make_client: MakeClient, tmp_path: Path
) -> None:
    async def endless() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"y" * 1000

    client = make_client(replies(httpx.Response(200, content=endless())))  # no Content-Length
    with pytest.raises(OutputTooLargeError):
        await client.download("https://out.test/a", tmp_path / "a", max_bytes=5000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_download_of_an_expired_output(
    make_client: MakeClient, tmp_path: Path, status: int
) -> None:
    with pytest.raises(OutputUnavailableError) as caught:
        await make_client(replies(httpx.Response(status, text="gone"))).download(
            "https://out.test/a", tmp_path / "a", max_bytes=10
        )
    assert caught.value.code == "upstream_output_unavailable"


async def test_download_retries_transient_answers(
    make_client: MakeClient, recorder: Recorder, tmp_path: Path
) -> None:
    client = make_client(
        replies(httpx.ConnectError("x"), nginx(503), httpx.Response(200, content=b"ok"))
    )
    assert (await client.download("https://out.test/a", tmp_path / "a", max_bytes=10)).size == 2
    assert len(recorder.requests) == 3


async def test_an_injected_http_client_is_left_open_and_the_key_never_shown() -> None:
    async with httpx.AsyncClient() as http:
        client = FalClient(KEY, queue_url=QUEUE, rest_url=REST, cdn_url=CDN, http=http)
        assert KEY not in repr(client)
        await client.aclose()
        assert not http.is_closed


async def test_a_client_created_inside_is_closed_with_the_fal_client() -> None:
    async with FalClient(KEY, queue_url=QUEUE, rest_url=REST, cdn_url=CDN) as client:
        assert KEY not in repr(client)
