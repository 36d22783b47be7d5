"""The fan-out: outbox rows become deliveries, in one transaction.

A batch of outbox rows is taken (``DELETE … RETURNING``, ``SKIP LOCKED``: any number of workers
fan out at once, none takes a row twice) and, in the same transaction, a delivery is made for
each receiver that wants the event: the tenant's enabled endpoints subscribed to its type, and a
job's own webhook if its filter names it. A crash before the commit leaves the rows in the outbox;
after it, the deliveries exist. So an event is delivered if and only if its transition committed.

``job.logs`` is throttled per job and receiver: while the last one made is still waiting for its
turn (``FOLEY_TENANT_WEBHOOK_LOGS_INTERVAL`` after the one before), a new one refreshes its body
instead of adding another, so the receiver gets every line, at most one event per interval.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.engine import unit_of_work
from app.jobs import store
from app.kit.clock import utcnow
from app.models import DeliveryStatus, Tenant
from app.notifications import payloads, repository
from app.notifications.events import BUDGET_EVENT_TYPES

BATCH = 500

# The batch's commit does not wait for the WAL flush: lost in a Postgres crash, the outbox rows
# come back with the deliveries made of them (one transaction), and are fanned out again.
_TAKE_LAZILY = text(
    "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true) AS on_commit) "
    "DELETE FROM notification_outbox WHERE id IN ("
    "  SELECT id FROM notification_outbox WHERE (SELECT on_commit FROM lazy) IS NOT NULL "
    "  ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
    ") RETURNING id, tenant_id, type, job_id, job_event_seq, budget_period_start, "
    "threshold_pct, occurred_at"
)
# The last job.logs delivery made to each receiver of these jobs, and whether it still waits.
_LAST_LOGS = text(
    "SELECT DISTINCT ON (job_id, target) id, job_id, target, created_at, "
    "  (status = 'pending' AND attempts = 0 AND lease_owner IS NULL) AS waiting "
    "FROM webhook_deliveries WHERE type = 'job.logs' AND job_id = ANY(:jobs) "
    "ORDER BY job_id, target, created_at DESC"
)
# Still waiting when written (a sender may have claimed it since it was read).
_REFRESH = text(
    "UPDATE webhook_deliveries SET body = :body WHERE id = :id "
    "AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL"
)


def origin(url: str) -> str:
    """A job webhook's receiver, for the per-receiver cap: scheme://host:port."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0]}"


def message_id(row: Any) -> str:
    """The event's webhook-id: one per event, shared by its receivers, stable across attempts."""
    if row.job_id is not None:
        return f"msg_{row.job_id.hex}_{row.job_event_seq}"
    stamp = int(row.budget_period_start.timestamp())
    return f"msg_budget_{row.tenant_id.hex}_{stamp}_{row.threshold_pct}"


async def fan_out(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, *, limit: int = BATCH
) -> tuple[int, int]:
    """One batch: (outbox rows taken, deliveries made or refreshed)."""
    async with unit_of_work(sessionmaker) as session:
        rows = list((await session.execute(_TAKE_LAZILY, {"n": limit})).all())
        if not rows:
            return 0, 0
        return len(rows), await _deliveries(session, rows, settings)


async def _deliveries(session: AsyncSession, rows: list[Any], settings: Settings) -> int:
    rows.sort(key=lambda r: r.id)
    tenants = sorted({r.tenant_id for r in rows})
    endpoints = defaultdict(list)
    for e in await repository.enabled_endpoints(session, tenants):
        endpoints[e.tenant_id].append(e)
    job_ids = sorted({r.job_id for r in rows if r.job_id is not None})
    jobs = {j.id: j for j in await store.by_ids(session, job_ids)}

    # (row, endpoint id or None, url or None, target) for every receiver that wants the event
    wanted: list[tuple[Any, uuid.UUID | None, str | None, str]] = []
    for row in rows:
        job = jobs.get(row.job_id) if row.job_id is not None else None
        if row.job_id is not None and job is None:
            continue  # deleted since (its events went with it)
        if job is not None and job.parent_id is not None:
            continue  # a segment of a longer video's job: the tenant is told of that job
        for e in endpoints.get(row.tenant_id, ()):
            if e.events is None or row.type in e.events:
                wanted.append((row, e.id, None, str(e.id)))
        if job is not None and job.webhook_url and row.type in (job.webhook_events or ()):
            wanted.append((row, None, job.webhook_url, origin(job.webhook_url)))
    if not wanted:
        return 0

    shown_jobs = sorted({r.job_id for r, *_ in wanted if r.job_id is not None})
    shown = await payloads.jobs_data(session, [jobs[i] for i in shown_jobs], settings)
    budget_rows = [r for r, *_ in wanted if r.type in BUDGET_EVENT_TYPES]
    budgets = await _budgets(session, budget_rows)
    bodies: dict[int, str] = {}
    for row, *_ in wanted:
        if row.id not in bodies:
            data = shown[row.job_id] if row.job_id is not None else budgets[row.id]
            bodies[row.id] = payloads.body(row.type, row.occurred_at, data)

    per_job_tenants = sorted({r.tenant_id for r, endpoint, *_ in wanted if endpoint is None})
    await repository.ensure_signing_keys(session, per_job_tenants)
    now = utcnow()
    last_logs = await _last_logs(session, [r.job_id for r, *_ in wanted if r.type == "job.logs"])
    interval = settings.tenant_webhook_logs_interval
    new: list[dict[str, Any]] = []
    touched = 0
    for row, endpoint_id, url, target in wanted:
        due = now
        if row.type == "job.logs":
            last = last_logs.get((row.job_id, target))
            if last is not None and await _refreshed(session, last, bodies[row.id], now):
                touched += 1
                continue
            if last is not None:
                due = max(now, last["created_at"] + interval)
        delivery = _delivery(row, endpoint_id, url, target, bodies[row.id], due)
        new.append(delivery)
        if row.type == "job.logs":
            last_logs[(row.job_id, target)] = {
                "id": delivery["id"],
                "created_at": due,
                "waiting": True,
                "made": delivery,
            }
    await repository.add_deliveries(session, new)
    return len(new) + touched


async def _refreshed(session: AsyncSession, last: dict[str, Any], body: str, now: datetime) -> bool:
    """The last job.logs delivery to the receiver, still waiting for its turn, now carries
    ``body`` (every line so far) instead: True. False when it went (or goes now) already."""
    made = last.get("made")
    if made is not None:  # made by this batch: not sent before its due time
        if made["next_attempt_at"] <= now:
            return False
        made["body"] = body
        return True
    if not last["waiting"]:
        return False
    done = await session.execute(_REFRESH, {"id": last["id"], "body": body})
    return bool(done.rowcount)  # type: ignore[attr-defined]


def _delivery(
    row: Any, endpoint_id: uuid.UUID | None, url: str | None, target: str, body: str, due: datetime
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant_id": row.tenant_id,
        "endpoint_id": endpoint_id,
        "url": url,
        "target": target,
        "job_id": row.job_id,
        "message_id": message_id(row),
        "type": row.type,
        "body": body,
        "status": DeliveryStatus.pending,
        "attempts": 0,
        "schedule_pos": 1,
        "next_attempt_at": due,
        # For a throttled job.logs, when its turn comes: the next one is spaced from it.
        "created_at": due,
    }


async def _last_logs(
    session: AsyncSession, job_ids: list[uuid.UUID | None]
) -> dict[tuple[uuid.UUID, str], dict[str, Any]]:
    ids = sorted({j for j in job_ids if j is not None})
    if not ids:
        return {}
    found = await session.execute(_LAST_LOGS, {"jobs": ids})
    return {(r.job_id, r.target): dict(r._mapping) for r in found}


async def _budgets(session: AsyncSession, rows: list[Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row.id in out:
            continue
        tenant = await session.get(Tenant, row.tenant_id)
        if tenant is not None:
            out[row.id] = await payloads.budget_data(
                session, tenant, row.threshold_pct, row.budget_period_start
            )
        else:
            out[row.id] = {"object": "budget", "tenant_id": str(row.tenant_id)}
    return out
