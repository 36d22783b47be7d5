"""Idempotency keys across processes: a claim is a lease its process renews; a key claimed by a
process that died is free again within seconds."""

from __future__ import annotations

import uuid
from datetime import timedelta

from app.db.engine import create_sessionmaker
from app.jobs.schemas import JobCreate
from app.kit.idempotency import IdempotencyGuard, request_fingerprint
from tests.support.waiting import eventually

BODY = {"model": "kling-video-to-audio", "input": {"video_url": "https://media.example/a.mp4"}}


def _guard(gw, key: str, lease_s: float) -> IdempotencyGuard:  # type: ignore[no-untyped-def]
    """Another API process's claim of ``key`` (its own connection, committed)."""
    return IdempotencyGuard(
        create_sessionmaker(gw.engine),
        tenant_id=uuid.UUID(gw.tenant_id),
        key=key,
        method="POST",
        path="/v1/jobs",
        fingerprint=request_fingerprint(
            "POST", "/v1/jobs", JobCreate.model_validate(BODY).model_dump(mode="json")
        ),
        retention=timedelta(hours=24),
        lease=timedelta(seconds=lease_s),
    )


async def _claimed_for(gw, key: str, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    rows = await gw.sql(
        "SELECT clock_timestamp() > created_at + make_interval(secs => :s) "
        "FROM idempotency_keys WHERE key = :k",
        k=key,
        s=seconds,
    )
    return bool(rows and rows[0][0])


async def test_a_key_claimed_by_a_process_that_died_is_free_again_within_seconds(gateway) -> None:
    async with gateway(workers=0) as gw:
        dead = _guard(gw, "order-dead", lease_s=0.5)
        assert await dead.claim() is None
        await dead.done()  # its process is gone: nothing renews the claim any more
        await eventually(lambda: _claimed_for(gw, "order-dead", 0.5), what="the lease to lapse")
        r = await gw.client.post(
            "/v1/jobs", json=BODY, headers={**gw.headers, "Idempotency-Key": "order-dead"}
        )
        assert r.status_code == 202, r.text  # the client's retry runs
        again = await gw.client.post(
            "/v1/jobs", json=BODY, headers={**gw.headers, "Idempotency-Key": "order-dead"}
        )
        assert again.headers.get("idempotent-replayed") == "true"  # and runs once
        assert again.json()["id"] == r.json()["id"]


async def test_a_running_request_keeps_its_key_past_its_lease(gateway) -> None:
    async with gateway(workers=0) as gw:
        alive = _guard(gw, "order-alive", lease_s=0.5)
        assert await alive.claim() is None
        try:
            # Three lease lengths on, renewed all along: still the running request's.
            await eventually(
                lambda: _claimed_for(gw, "order-alive", 1.5), what="three lease lengths"
            )
            r = await gw.client.post(
                "/v1/jobs", json=BODY, headers={**gw.headers, "Idempotency-Key": "order-alive"}
            )
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "idempotency_request_in_progress"
        finally:
            await alive.done()
        rows = await gw.sql("SELECT count(*) FROM jobs")
        assert rows == [(0,)]
