"""The SQL of endpoints, signing keys and deliveries as the API and the fan-out read them.
Every tenant's read starts from a statement filtered by the tenant (None: the operator's)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSigningKey,
)
from app.notifications.queue import WAKE_CHANNEL, WAKE_DELIVERIES
from app.notifications.signing import new_secret


def _endpoints(tenant_id: uuid.UUID | None) -> Select[tuple[WebhookEndpoint]]:
    stmt = select(WebhookEndpoint)
    return stmt if tenant_id is None else stmt.where(WebhookEndpoint.tenant_id == tenant_id)


async def get_endpoint(
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    endpoint_id: uuid.UUID,
    *,
    lock: bool = False,
) -> WebhookEndpoint | None:
    stmt = _endpoints(tenant_id).where(WebhookEndpoint.id == endpoint_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return (await session.scalars(stmt)).first()


async def list_endpoints(
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[WebhookEndpoint], bool]:
    """Newest first, keyset-paginated on (created_at, id)."""
    stmt = _endpoints(tenant_id)
    key = tuple_(WebhookEndpoint.created_at, WebhookEndpoint.id)
    if after is not None:
        stmt = stmt.where(key < tuple_(*after))
    stmt = stmt.order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc())
    rows = list((await session.scalars(stmt.limit(limit + 1))).all())
    return rows[:limit], len(rows) > limit


async def enabled_endpoints(
    session: AsyncSession, tenant_ids: Sequence[uuid.UUID]
) -> list[WebhookEndpoint]:
    """Every enabled endpoint of these tenants (the fan-out's read)."""
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id.in_(tenant_ids), WebhookEndpoint.enabled
    )
    return list((await session.scalars(stmt)).all())


async def signing_key(session: AsyncSession, tenant_id: uuid.UUID) -> WebhookSigningKey:
    """The tenant's default secret, made on first use (a concurrent first use makes one too:
    the first insert wins, both read it)."""
    await session.execute(
        insert(WebhookSigningKey)
        .values(tenant_id=tenant_id, secret=new_secret())
        .on_conflict_do_nothing()
    )
    stmt = (
        select(WebhookSigningKey)
        .where(WebhookSigningKey.tenant_id == tenant_id)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(stmt)).one()


async def ensure_signing_keys(session: AsyncSession, tenant_ids: Sequence[uuid.UUID]) -> None:
    if tenant_ids:
        await session.execute(
            insert(WebhookSigningKey)
            .values([{"tenant_id": t, "secret": new_secret()} for t in tenant_ids])
            .on_conflict_do_nothing()
        )


async def deliveries_of(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> tuple[list[WebhookDelivery], dict[uuid.UUID, list[WebhookAttempt]], bool]:
    """An endpoint's deliveries, newest first, with their attempts (oldest first). The caller has
    checked the endpoint is the tenant's."""
    stmt = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    key = tuple_(WebhookDelivery.created_at, WebhookDelivery.id)
    if after is not None:
        stmt = stmt.where(key < tuple_(*after))
    stmt = stmt.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
    rows = list((await session.scalars(stmt.limit(limit + 1))).all())
    page = rows[:limit]
    return page, await attempts_of(session, [d.id for d in page]), len(rows) > limit


async def attempts_of(
    session: AsyncSession, delivery_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[WebhookAttempt]]:
    """Each delivery's attempts, oldest first."""
    attempts: dict[uuid.UUID, list[WebhookAttempt]] = {d: [] for d in delivery_ids}
    if delivery_ids:
        found = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(delivery_ids))
            .order_by(WebhookAttempt.id)
        )
        for attempt in found:
            attempts[attempt.delivery_id].append(attempt)
    return attempts


async def cursor_of_endpoint(
    session: AsyncSession, tenant_id: uuid.UUID | None, endpoint_id: uuid.UUID
) -> tuple[datetime, uuid.UUID] | None:
    stmt = _endpoints(tenant_id).where(WebhookEndpoint.id == endpoint_id)
    row = (await session.scalars(stmt)).first()
    return (row.created_at, row.id) if row else None


async def cursor_of_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> tuple[datetime, uuid.UUID] | None:
    row = await get_delivery(session, endpoint_id, delivery_id)
    return (row.created_at, row.id) if row else None


async def get_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery | None:
    stmt = select(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.id == delivery_id
    )
    return (await session.scalars(stmt)).first()


async def add_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(insert(WebhookDelivery), rows)


async def wake_senders(session: AsyncSession) -> None:
    """Deliveries made here are due now: wake the workers' senders (at commit)."""
    await session.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": WAKE_CHANNEL, "payload": WAKE_DELIVERIES},
    )


async def resend(session: AsyncSession, delivery: WebhookDelivery, *, last_pos: int) -> None:
    """Attempt a delivery again now, keeping its webhook-id and body: a pending one moves up; a
    finished one gets one attempt (schedule position at its end), unless it is in flight."""
    values: dict[str, Any] = {"next_attempt_at": text("statement_timestamp()")}
    if delivery.status is not DeliveryStatus.pending:
        values |= {"status": DeliveryStatus.pending, "schedule_pos": last_pos, "completed_at": None}
    await session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id == delivery.id).values(**values)
    )


async def prune(session: AsyncSession, retention: timedelta) -> int:
    """Deliveries (with their attempts) finished longer ago than ``retention``, and those left
    waiting that long on an endpoint that stays disabled."""
    result = await session.execute(
        text(
            "DELETE FROM webhook_deliveries d "
            "WHERE d.created_at < statement_timestamp() - CAST(:keep AS interval) "
            "AND (d.status <> 'pending' OR EXISTS (SELECT 1 FROM webhook_endpoints e "
            "WHERE e.id = d.endpoint_id AND NOT e.enabled))"
        ),
        {"keep": retention},
    )
    return result.rowcount or 0  # type: ignore[attr-defined, no-any-return]
