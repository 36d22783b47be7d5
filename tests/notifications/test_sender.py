"""What an attempt's outcome makes of its delivery: the retry schedule, Retry-After, 410."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.notifications.queue import Claimed
from app.notifications.sender import MAX_RETRY_AFTER, decide
from app.notifications.transport import Outcome

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
SCHEDULE = [timedelta(0), timedelta(seconds=5), timedelta(minutes=5)]


def claimed(pos: int) -> Claimed:
    return Claimed(
        id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        target="t",
        url="https://example.com/hook",
        message_id="msg_1",
        type="job.succeeded",
        body="{}",
        schedule_pos=pos,
        secrets=["whsec_x"],
    )


def outcome(status: int | None, retry_after: timedelta | None = None) -> Outcome:
    ok = status is not None and 200 <= status < 300
    return Outcome(status, 12, None if ok else f"answered {status}", retry_after)


def test_a_2xx_succeeds() -> None:
    done = decide(claimed(1), outcome(204), attempted_at=NOW, schedule=SCHEDULE, now=NOW)
    assert (done.status, done.next_attempt_at, done.status_code) == ("succeeded", None, 204)


def test_a_failure_is_retried_on_the_schedule_until_it_is_spent() -> None:
    first = decide(claimed(1), outcome(500), attempted_at=NOW, schedule=SCHEDULE, now=NOW)
    assert (first.status, first.next_attempt_at, first.schedule_pos) == (
        "pending",
        NOW + timedelta(seconds=5),
        2,
    )
    second = decide(claimed(2), outcome(None), attempted_at=NOW, schedule=SCHEDULE, now=NOW)
    assert second.next_attempt_at == NOW + timedelta(minutes=5)
    last = decide(claimed(3), outcome(302), attempted_at=NOW, schedule=SCHEDULE, now=NOW)
    assert (last.status, last.next_attempt_at) == ("failed", None)


def test_retry_after_is_honoured_never_sooner_than_the_schedule_and_capped() -> None:
    later = decide(
        claimed(1), outcome(429, timedelta(minutes=2)), attempted_at=NOW, schedule=SCHEDULE, now=NOW
    )
    assert later.next_attempt_at == NOW + timedelta(minutes=2)
    sooner = decide(
        claimed(2), outcome(503, timedelta(seconds=1)), attempted_at=NOW, schedule=SCHEDULE, now=NOW
    )
    assert sooner.next_attempt_at == NOW + timedelta(minutes=5)
    absurd = decide(
        claimed(1), outcome(503, timedelta(days=365)), attempted_at=NOW, schedule=SCHEDULE, now=NOW
    )
    assert absurd.next_attempt_at == NOW + MAX_RETRY_AFTER


def test_410_fails_at_once() -> None:
    gone = decide(claimed(1), outcome(410), attempted_at=NOW, schedule=SCHEDULE, now=NOW)
    assert (gone.status, gone.next_attempt_at, gone.status_code) == ("failed", None, 410)
