"""The queue calls (``app/upstream/queue.py``) against a faked network edge
(httpx.MockTransport): the wire each sends and what each of fal's answers becomes. Nothing of our
own code is mocked."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import httpx
import pytest
from structlog.testing import capture_logs

from app.upstream import (
    AmbiguousSubmitError,
    CancelOutcome,
    PermanentUpstreamError,
    QueueState,
    ResultCancelled,
    ResultFailed,
    ResultNotFound,
    ResultOk,
    ResultPending,
    UpstreamAccountLockedError,
    UpstreamAuthError,
    UpstreamNotFoundError,
    UpstreamStartTimeoutError,
    UpstreamValidationError,
)
from tests.upstream.conftest import (
    BASE,
    ENDPOINT,
    FAL_ID,
    KEY,
    RID,
    MakeClient,
    Recorder,
    ok_submit,
    replies,
)

# --- submit: the wire -------------------------------------------------------------------------


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


async def test_submit_unreadable_success_is_ambiguous(make_client: MakeClient) -> None:
    garbled = httpx.Response(200, json={"request_id": RID}, headers=FAL_ID)
    with pytest.raises(AmbiguousSubmitError) as caught:
        await make_client(replies(garbled)).submit(ENDPOINT, {})
    assert caught.value.request_id == RID


# --- submit: permanent answers ----------------------------------------------------------------


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


# --- status -----------------------------------------------------------------------------------


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


async def test_status_unknown_request_is_not_found(make_client: MakeClient) -> None:
    with pytest.raises(UpstreamNotFoundError):
        await make_client(replies(httpx.Response(404, json={"detail": "Not found"}))).status(
            f"{BASE}/status"
        )


# --- result -----------------------------------------------------------------------------------


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


# --- cancel -----------------------------------------------------------------------------------


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
