"""The retry loop every call goes through (``app/upstream/transport.py``) against a faked
network edge (httpx.MockTransport): which failures it retries, how long it waits, what it logs,
and which hosts get the key. Nothing of our own code is mocked."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from app.upstream import (
    AmbiguousSubmitError,
    CancelOutcome,
    QueueState,
    ResultOk,
    RetryPolicy,
    TransientUpstreamError,
    UpstreamUntrustedURLError,
)
from tests.upstream.conftest import (
    BASE,
    ENDPOINT,
    FAL_ID,
    RID,
    MakeClient,
    Recorder,
    nginx,
    ok_submit,
    replies,
)

# --- submit: retried only where no request can exist ------------------------------------------


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


async def test_each_call_is_logged_with_endpoint_status_request_id_attempt_latency(
    make_client: MakeClient,
) -> None:
    with capture_logs() as logs:
        await make_client(replies(nginx(502), ok_submit())).submit(ENDPOINT, {})
    calls = [entry for entry in logs if entry["event"] == "upstream.call"]
    assert [(c["status"], c["attempt"], c["fal_request_id"]) for c in calls] == [
        (502, 1, None),
        (200, 2, RID),
    ]
    assert all(c["endpoint"] == ENDPOINT and c["latency_ms"] >= 0 for c in calls)


# --- idempotent calls: retried on transient failures ------------------------------------------


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


async def test_result_ingress_error_is_retried(make_client: MakeClient, recorder: Recorder) -> None:
    client = make_client(replies(nginx(502), httpx.Response(200, json={"x": 1})))
    assert isinstance(await client.result(BASE), ResultOk)
    assert len(recorder.requests) == 2


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


async def test_download_retries_transient_answers(
    make_client: MakeClient, recorder: Recorder, tmp_path: Path
) -> None:
    client = make_client(
        replies(httpx.ConnectError("x"), nginx(503), httpx.Response(200, content=b"ok"))
    )
    assert (await client.download("https://out.test/a", tmp_path / "a", max_bytes=10)).size == 2
    assert len(recorder.requests) == 3


# --- where the key may go ---------------------------------------------------------------------


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
