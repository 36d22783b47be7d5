"""The deliveries table as the senders' queue: claims with a lease, outcomes written in batches.

Single statements on the raw connection (app.db.driver): the senders make a claim and a write per
batch of attempts, hundreds a second under load.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from app.db.driver import DriverPool

WAKE_CHANNEL = "foley_webhooks"
WAKE_DELIVERIES = "delivery"  # deliveries made outside the fan-out (a test ping, a redelivery)
CLAIM_LOCK = 72190009


@dataclass(frozen=True, slots=True)
class Claimed:
    id: uuid.UUID
    tenant_id: uuid.UUID
    endpoint_id: uuid.UUID | None
    target: str
    url: str
    message_id: str
    type: str
    body: str
    schedule_pos: int
    secrets: list[str]


# Due deliveries whose receiver is under its cap (counting what any worker has in flight to it),
# oldest due first; deliveries of a disabled endpoint wait. The receivers with pending work are
# listed by a skip scan of ix_webhook_deliveries_lane (one index probe per receiver, however
# long its backlog), each one's due deliveries taken from the same index up to its free room:
# a claim costs the same with 10 or 100,000 deliveries waiting, and a receiver's backlog never
# hides another's. Under a transaction-level advisory lock, so that the count and the claim are
# one decision across workers. The lock step re-checks status and lease on each row's newest
# version: a delivery recorded (succeeded) after this statement's snapshot is not taken again.
# The secrets are read with the claim: a rotation applies to the next attempt.
# $1 owner, $2 lease, $3 limit, $4 per-receiver cap.
_CLAIM = """
    WITH RECURSIVE lanes AS (
        (SELECT target FROM webhook_deliveries WHERE status = 'pending' ORDER BY target LIMIT 1)
        UNION ALL
        SELECT (SELECT d.target FROM webhook_deliveries d
                WHERE d.status = 'pending' AND d.target > lanes.target
                ORDER BY d.target LIMIT 1)
        FROM lanes WHERE lanes.target IS NOT NULL
    ),
    busy AS (
        SELECT target, count(*) AS n FROM webhook_deliveries
        WHERE status = 'pending' AND lease_owner IS NOT NULL
          AND lease_expires_at > statement_timestamp()
        GROUP BY target
    ),
    picked AS (
        SELECT due.id, due.next_attempt_at FROM lanes
        LEFT JOIN busy ON busy.target = lanes.target
        CROSS JOIN LATERAL (
            SELECT d.id, d.next_attempt_at FROM webhook_deliveries d
            WHERE d.status = 'pending' AND d.target = lanes.target
              AND d.next_attempt_at <= statement_timestamp()
              AND (d.lease_expires_at IS NULL OR d.lease_expires_at < statement_timestamp())
            ORDER BY d.next_attempt_at
            LIMIT greatest(0, $4 - coalesce(busy.n, 0))
        ) due
        WHERE lanes.target IS NOT NULL
          AND NOT EXISTS (
              SELECT 1 FROM webhook_endpoints e
              WHERE e.id = (CASE WHEN lanes.target LIKE '%://%' THEN NULL
                                 ELSE lanes.target::uuid END)
                AND NOT e.enabled)
        ORDER BY due.next_attempt_at
        LIMIT $3
    ),
    claimed AS (
        UPDATE webhook_deliveries d
        SET lease_owner = $1, lease_expires_at = statement_timestamp() + $2::interval
        WHERE d.id IN (
            SELECT id FROM webhook_deliveries
            WHERE id IN (SELECT id FROM picked) AND status = 'pending'
              AND (lease_expires_at IS NULL OR lease_expires_at < statement_timestamp())
            FOR UPDATE SKIP LOCKED
        )
        RETURNING d.id, d.tenant_id, d.endpoint_id, d.target, d.url, d.message_id, d.type,
                  d.body, d.schedule_pos
    )
    SELECT c.*, coalesce(c.url, e.url) AS to_url,
           coalesce(e.secret, k.secret) AS secret,
           CASE WHEN coalesce(e.previous_expires_at, k.previous_expires_at)
                     > statement_timestamp()
                THEN coalesce(e.previous_secret, k.previous_secret) END AS previous
    FROM claimed c
    LEFT JOIN webhook_endpoints e ON e.id = c.endpoint_id
    LEFT JOIN webhook_signing_keys k ON c.endpoint_id IS NULL AND k.tenant_id = c.tenant_id
"""


async def claim(
    driver: DriverPool, owner: str, lease: timedelta, limit: int, per_receiver: int
) -> list[Claimed]:
    if limit <= 0:
        return []
    async with driver.acquire() as conn, conn.transaction():
        # Only leases are taken: a claim lost in a crash is as if never made (see the jobs'
        # claim in app.jobs.store.claims for the same reasoning).
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1), set_config('synchronous_commit', 'off', true)",
            CLAIM_LOCK,
        )
        rows = await conn.fetch(_CLAIM, owner, lease, limit, per_receiver)
    return [
        Claimed(
            id=r["id"],
            tenant_id=r["tenant_id"],
            endpoint_id=r["endpoint_id"],
            target=r["target"],
            url=r["to_url"],
            message_id=r["message_id"],
            type=r["type"],
            body=r["body"],
            schedule_pos=r["schedule_pos"],
            # The current secret first: receivers that check only the first entry still pass.
            secrets=[s for s in (r["secret"], r["previous"]) if s],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Recorded:
    """An attempt and what it decided for its delivery."""

    delivery_id: uuid.UUID
    status: str  # pending (a retry is due at next_attempt_at), succeeded, failed
    next_attempt_at: datetime | None
    schedule_pos: int
    status_code: int | None
    error: str | None
    attempted_at: datetime
    duration_ms: int


# The deliveries updated only while still ours (a sender whose lease ran out writes nothing
# there: another has the delivery); the attempt is recorded whatever happened. In the same
# statement, the endpoints' health: a success clears ``failing_since``, a failure starts it; the
# enabled endpoints failing since then are answered. Its commit does not wait for the WAL flush
# (``lazy``): lost in a Postgres crash, the attempts are as if never made, and the deliveries,
# still leased, are sent again after the lease (at least once, same webhook-id).
_RECORD = """
    WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true) AS on_commit),
    r AS (
        SELECT * FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::integer[],
                             $6::integer[], $7::text[], $8::timestamptz[], $9::integer[])
            AS r(id, status, next_at, pos, code, error, attempted_at, ms)
    ),
    updated AS (
        UPDATE webhook_deliveries d
        SET status = r.status::webhook_delivery_status, attempts = d.attempts + 1,
            next_attempt_at = coalesce(r.next_at, d.next_attempt_at), schedule_pos = r.pos,
            last_status_code = r.code, last_error = r.error,
            lease_owner = NULL, lease_expires_at = NULL,
            completed_at = CASE WHEN r.status <> 'pending' THEN r.attempted_at END
        FROM r WHERE d.id = r.id AND d.lease_owner = $1
          AND (SELECT on_commit FROM lazy) IS NOT NULL
        RETURNING d.id
    ),
    attempts AS (
        INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, duration_ms, error)
        SELECT r.id, r.attempted_at, r.code, r.ms, r.error FROM r
        WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = r.id)
    ),
    healed AS (
        UPDATE webhook_endpoints SET failing_since = NULL
        WHERE id = ANY($10::uuid[]) AND failing_since IS NOT NULL
    )
    UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, $12)
    WHERE id = ANY($11::uuid[]) AND enabled
    RETURNING id, failing_since
"""


async def record(
    driver: DriverPool,
    owner: str,
    done: list[Recorded],
    *,
    succeeded: set[uuid.UUID],
    failed: set[uuid.UUID],
    now: datetime,
) -> list[tuple[uuid.UUID, datetime]]:
    """Write the attempts and what they decided; ``succeeded`` and ``failed``: the endpoints
    that had a success, or only failures. Answers the enabled endpoints failing, since when."""
    if not done:
        return []
    async with driver.acquire() as conn:
        rows = await conn.fetch(
            _RECORD,
            owner,
            [d.delivery_id for d in done],
            [d.status for d in done],
            [d.next_attempt_at for d in done],
            [d.schedule_pos for d in done],
            [d.status_code for d in done],
            [d.error for d in done],
            [d.attempted_at for d in done],
            [d.duration_ms for d in done],
            list(succeeded),
            list(failed - succeeded),
            now,
        )
    return [(r["id"], r["failing_since"]) for r in rows]


async def soonest_due(driver: DriverPool) -> datetime | None:
    """When the next delivery a claim could take is due (a delivery in flight comes back, if
    its sender dies, when its lease expires: that is left to the senders' polling)."""
    async with driver.acquire() as conn:
        return await conn.fetchval(  # type: ignore[no-any-return]
            "SELECT d.next_attempt_at FROM webhook_deliveries d "
            "WHERE d.status = 'pending' "
            "AND (d.lease_expires_at IS NULL OR d.lease_expires_at < statement_timestamp()) "
            "AND (d.endpoint_id IS NULL OR EXISTS ("
            "    SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled)) "
            "ORDER BY d.next_attempt_at LIMIT 1"
        )


async def backlog(conn: asyncpg.Connection) -> tuple[int, datetime | None]:
    """Deliveries waiting for an attempt (paused endpoints' included), and the oldest one's due
    time: the operator's gauges."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(next_attempt_at) AS oldest FROM webhook_deliveries "
        "WHERE status = 'pending'"
    )
    return int(row["n"]), row["oldest"]


async def give_back(driver: DriverPool, owner: str, ids: list[uuid.UUID]) -> None:
    """Leases of attempts cut at shutdown, given back now rather than at their expiry (the
    receiver may have had them: they are sent again, with the same webhook-id)."""
    if not ids:
        return
    async with driver.acquire() as conn:
        await conn.execute(
            "UPDATE webhook_deliveries SET lease_owner = NULL, lease_expires_at = NULL "
            "WHERE id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'pending'",
            ids,
            owner,
        )
