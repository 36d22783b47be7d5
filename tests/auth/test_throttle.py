"""Failed admin authentication is counted, logged (without the token) and slowed."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from app.auth.throttle import MAX_DELAY_S, FailedAuthThrottle
from tests.conftest import ADMIN


def failures_counted() -> float:
    return (
        REGISTRY.get_sample_value("foley_admin_auth_failures_total", {"reason": "wrong_token"})
        or 0.0
    )


async def test_wrong_admin_tokens_are_counted_logged_and_slowed(api: httpx.AsyncClient) -> None:
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    throttle = FailedAuthThrottle(sleep=record)
    api.app.state.admin_auth_throttle = throttle  # type: ignore[attr-defined]
    before = failures_counted()
    guesses = [f"guess-{i}-secret" for i in range(8)]
    with capture_logs() as logs:
        for guess in guesses:
            r = await api.get("/v1/admin/tenants", headers={"Authorization": f"Bearer {guess}"})
            assert r.status_code == 401 and r.json()["code"] == "invalid_admin_token"
    assert failures_counted() - before == len(guesses)
    # Exponential, bounded
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, MAX_DELAY_S, MAX_DELAY_S]
    failed = [e for e in logs if e["event"] == "admin authentication failed"]
    assert len(failed) == len(guesses)
    assert failed[-1]["failures"] == len(guesses) and failed[-1]["source"]
    assert not any(guess in repr(logs) for guess in guesses)

    # The right token is not delayed, and the source's record is forgotten.
    source = "127.0.0.1"  # httpx's ASGI transport's client address
    assert throttle.failures(source) == len(guesses)
    assert (await api.get("/v1/admin/tenants", headers=ADMIN)).status_code == 200
    assert len(delays) == len(guesses)
    assert throttle.failures(source) == 0


async def test_failures_from_one_source_are_answered_one_at_a_time() -> None:
    active = peak = 0

    async def slow(delay: float) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(5):
            await asyncio.sleep(0)  # let the others run: they must queue, not sleep alongside
        active -= 1

    throttle = FailedAuthThrottle(sleep=slow)
    await asyncio.gather(*(throttle.failed("10.0.0.1") for _ in range(6)))
    assert peak == 1
    assert throttle.failures("10.0.0.1") == 6
    # Another source is not held up by the first one's queue.
    await asyncio.gather(throttle.failed("10.0.0.2"), throttle.failed("10.0.0.3"))
    assert peak == 2


async def test_memory_is_bounded_and_old_failures_forgotten() -> None:
    now = 0.0

    async def no_wait(delay: float) -> None:
        return None

    throttle = FailedAuthThrottle(sleep=no_wait, clock=lambda: now, max_sources=3)
    for i in range(10):
        await throttle.failed(f"10.0.0.{i}")
    assert [throttle.failures(f"10.0.0.{i}") for i in range(10)] == [0] * 7 + [1] * 3
    assert await throttle.failed("10.0.0.9") == (0.2, 2)
    now = 901.0
    assert await throttle.failed("10.0.0.9") == (0.1, 1)  # quiet for 15 minutes: forgotten
