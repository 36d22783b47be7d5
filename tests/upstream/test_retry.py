"""The retry policy's pure parts: delays, Retry-After, fal's retry hints, classification."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import httpx
import pytest

from app.upstream.retry import (
    RetryPolicy,
    Verdict,
    classify_call_exception,
    classify_call_response,
    classify_submit_exception,
    classify_submit_response,
    parse_retry_after,
    retryable_hint,
)

POLICY = RetryPolicy(max_attempts=6, base_delay_s=0.5, max_delay_s=8.0, retry_after_cap_s=30.0)


def response(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


def test_full_jitter_ceiling_doubles_up_to_the_cap() -> None:
    ceilings = [POLICY.backoff_s(n, lambda low, high: high) for n in range(1, 8)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_full_jitter_can_pick_zero_and_stays_within_bounds() -> None:
    assert POLICY.backoff_s(3, lambda low, high: low) == 0.0
    rng = random.Random(7)
    for retry in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (retry - 1))
        for _ in range(200):
            assert 0.0 <= POLICY.backoff_s(retry, rng.uniform) <= ceiling


def test_huge_retry_numbers_do_not_overflow() -> None:
    assert POLICY.backoff_s(10_000, lambda low, high: high) == 8.0


def test_retry_after_within_cap_is_used_exactly_and_beyond_cap_stops() -> None:
    assert POLICY.delay_s(1, 12.0, lambda low, high: high) == 12.0
    assert POLICY.delay_s(1, 30.0, lambda low, high: high) == 30.0
    assert POLICY.delay_s(1, 31.0, lambda low, high: high) is None
    assert POLICY.delay_s(2, None, lambda low, high: high) == 1.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        ("  7 ", 7.0),
        ("-4", 0.0),
        ("", None),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:45 GMT", now=now) == 45.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:59:00 GMT", now=now) == 0.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"X-Fal-Retryable": "true"}, True),
        ({"X-Fal-Retryable": "0"}, False),
        ({"X-Fal-Needs-Retry": "1"}, True),
        ({"X-Fal-Needs-Retry": "false"}, False),
        ({"X-Fal-Retryable": "maybe", "X-Fal-Needs-Retry": "true"}, True),
    ],
)
def test_both_retry_hint_headers_are_read(headers: dict[str, str], expected: bool | None) -> None:
    assert retryable_hint(httpx.Headers(headers)) is expected


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("x"), httpx.ConnectTimeout("x"), httpx.PoolTimeout("x")],
)
def test_submit_exceptions_raised_before_sending_are_retried(exc: Exception) -> None:
    assert classify_submit_exception(exc) is Verdict.RETRY


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("x"),
        httpx.ReadError("x"),
        httpx.RemoteProtocolError("x"),
        httpx.WriteTimeout("x"),
        httpx.WriteError("x"),
    ],
)
def test_submit_exceptions_after_sending_are_ambiguous(exc: Exception) -> None:
    assert classify_submit_exception(exc) is Verdict.AMBIGUOUS
    # The same failures on an idempotent call are simply retried.
    assert classify_call_exception(exc) is Verdict.RETRY


def test_misconfiguration_is_not_retried() -> None:
    assert classify_submit_exception(httpx.UnsupportedProtocol("x")) is Verdict.FAIL
    assert classify_call_exception(httpx.UnsupportedProtocol("x")) is Verdict.FAIL


@pytest.mark.parametrize(
    ("resp", "verdict"),
    [
        (response(200), Verdict.ANSWER),
        (response(429), Verdict.RETRY),
        (response(429, **{"x-fal-request-id": "r"}), Verdict.RETRY),
        (response(408), Verdict.RETRY),
        (response(502), Verdict.RETRY),
        (response(503), Verdict.RETRY),
        (response(504), Verdict.RETRY),
        (response(502, **{"x-fal-request-id": "r"}), Verdict.AMBIGUOUS),
        (response(503, **{"x-fal-request-id": "r", "X-Fal-Retryable": "true"}), Verdict.AMBIGUOUS),
        (response(500), Verdict.AMBIGUOUS),
        (response(500, **{"x-fal-request-id": "r"}), Verdict.AMBIGUOUS),
        (response(504, **{"x-fal-request-timeout-type": "user"}), Verdict.ANSWER),
        (response(503, **{"X-Fal-Retryable": "false"}), Verdict.ANSWER),
        (response(401), Verdict.ANSWER),
        (response(422), Verdict.ANSWER),
    ],
)
def test_submit_response_matrix(resp: httpx.Response, verdict: Verdict) -> None:
    assert classify_submit_response(resp, POLICY) is verdict


def test_ingress_gateway_errors_can_be_declared_ambiguous() -> None:
    cautious = RetryPolicy(ingress_gateway_errors_retryable=False)
    assert classify_submit_response(response(502), cautious) is Verdict.AMBIGUOUS
    assert classify_submit_response(response(504), cautious) is Verdict.AMBIGUOUS
    assert classify_submit_response(response(503), cautious) is Verdict.RETRY


@pytest.mark.parametrize(
    ("resp", "model_answers", "verdict"),
    [
        (response(502), True, Verdict.RETRY),
        (response(503, **{"x-fal-request-id": "r"}), False, Verdict.RETRY),
        (response(503, **{"x-fal-request-id": "r"}), True, Verdict.ANSWER),
        (response(500, **{"x-fal-request-id": "r"}), False, Verdict.RETRY),
        (
            response(500, **{"x-fal-request-id": "r", "X-Fal-Needs-Retry": "0"}),
            False,
            Verdict.ANSWER,
        ),
        (response(429), True, Verdict.RETRY),
        (response(404), False, Verdict.ANSWER),
        (response(400), True, Verdict.ANSWER),
    ],
)
def test_idempotent_call_response_matrix(
    resp: httpx.Response, model_answers: bool, verdict: Verdict
) -> None:
    assert classify_call_response(resp, model_answers=model_answers) is verdict
