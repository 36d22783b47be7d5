"""Webhook endpoints: create, read, change, rotate, test, redeliver. ``tenant_id`` None is the
operator (any tenant's); a tenant never reaches another's endpoint (404)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit import service as audit
from app.config import Settings
from app.db.engine import unit_of_work
from app.files.outbound import outbound_policy
from app.kit.clock import utcnow
from app.kit.pagination import InvalidCursor
from app.kit.problems import InputValidationError, NotFound
from app.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from app.netguard import UrlRefused, check_url
from app.notifications import payloads, repository
from app.notifications.events import PING
from app.notifications.schemas import EndpointCreate, EndpointUpdate
from app.notifications.signing import new_secret

log = structlog.get_logger(__name__)


class EndpointNotFound(NotFound):
    code = "webhook_endpoint_not_found"


class DeliveryNotFound(NotFound):
    code = "webhook_delivery_not_found"


async def check_endpoint_url(url: str, settings: Settings) -> None:
    """The same guard as an input video's URL, fully (its name resolved and every address
    vetted): an endpoint is created rarely, and then delivered to for a long time."""
    try:
        await check_url(url, outbound_policy(settings))
    except UrlRefused as exc:
        raise InputValidationError(
            [{"param": "url", "code": exc.code, "message": exc.detail}]
        ) from exc


async def create_endpoint(
    session: AsyncSession, tenant_id: uuid.UUID, body: EndpointCreate, settings: Settings
) -> WebhookEndpoint:
    await check_endpoint_url(body.url, settings)
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        url=body.url.strip(),
        events=body.events,
        description=body.description,
        enabled=True,
        secret=new_secret(),
    )
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    return endpoint


async def get_endpoint(
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    endpoint_id: uuid.UUID,
    *,
    lock: bool = False,
) -> WebhookEndpoint:
    endpoint = await repository.get_endpoint(session, tenant_id, endpoint_id, lock=lock)
    if endpoint is None:
        raise EndpointNotFound(f"No webhook endpoint {endpoint_id}.", param="endpoint_id")
    return endpoint


async def list_endpoints(
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    *,
    limit: int,
    starting_after: uuid.UUID | None,
    of_tenant: uuid.UUID | None = None,
) -> tuple[list[WebhookEndpoint], bool]:
    """A tenant's endpoints; the operator's (``tenant_id`` None): every tenant's, or
    ``of_tenant``'s."""
    scope = tenant_id if tenant_id is not None else of_tenant
    after = None
    if starting_after is not None:
        after = await repository.cursor_of_endpoint(session, scope, starting_after)
        if after is None:
            raise InvalidCursor(f"No webhook endpoint {starting_after}.", param="starting_after")
    return await repository.list_endpoints(session, scope, limit=limit, after=after)


async def update_endpoint(
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    endpoint_id: uuid.UUID,
    body: EndpointUpdate,
    settings: Settings,
) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, tenant_id, endpoint_id, lock=True)
    given = body.model_fields_set
    if "url" in given and body.url is not None:
        await check_endpoint_url(body.url, settings)
        endpoint.url = body.url.strip()
    if "events" in given:
        endpoint.events = body.events
    if "description" in given:
        endpoint.description = body.description
    if "enabled" in given and body.enabled is not None:
        endpoint.enabled = body.enabled
        if body.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
    # Set here, not left to the column's onupdate: a server-side value would be expired after
    # the flush, and reading it back in an async session is a lazy load (an error).
    endpoint.updated_at = utcnow()
    await session.flush()
    return endpoint


async def delete_endpoint(
    session: AsyncSession, tenant_id: uuid.UUID | None, endpoint_id: uuid.UUID
) -> None:
    """Its deliveries and their attempts go with it."""
    endpoint = await get_endpoint(session, tenant_id, endpoint_id, lock=True)
    await session.delete(endpoint)
    await session.flush()


async def rotate_secret(
    session: AsyncSession, tenant_id: uuid.UUID | None, endpoint_id: uuid.UUID, grace: timedelta
) -> tuple[WebhookEndpoint, str]:
    endpoint = await get_endpoint(session, tenant_id, endpoint_id, lock=True)
    secret = new_secret()
    endpoint.previous_secret = endpoint.secret if grace > timedelta(0) else None
    endpoint.previous_expires_at = utcnow() + grace if grace > timedelta(0) else None
    endpoint.secret = secret
    endpoint.updated_at = utcnow()  # see update_endpoint
    await session.flush()
    return endpoint, secret


async def send_test(
    session: AsyncSession, tenant_id: uuid.UUID | None, endpoint_id: uuid.UUID
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """A ``ping`` delivery, attempted at once by a worker (and retried like any other)."""
    endpoint = await get_endpoint(session, tenant_id, endpoint_id)
    now = utcnow()
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant_id": endpoint.tenant_id,
        "endpoint_id": endpoint.id,
        "url": None,
        "target": str(endpoint.id),
        "job_id": None,
        "message_id": f"msg_ping_{uuid.uuid4().hex}",
        "type": PING,
        "body": payloads.body(PING, now, payloads.endpoint_data(endpoint.id, endpoint.url)),
        "status": DeliveryStatus.pending,
        "next_attempt_at": now,
        "created_at": now,
    }
    await repository.add_deliveries(session, [row])
    await repository.wake_senders(session)
    delivery = await repository.get_delivery(session, endpoint.id, row["id"])
    assert delivery is not None
    return delivery, []


async def list_deliveries(
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    endpoint_id: uuid.UUID,
    *,
    limit: int,
    starting_after: uuid.UUID | None,
) -> tuple[list[WebhookDelivery], dict[uuid.UUID, list[WebhookAttempt]], bool]:
    await get_endpoint(session, tenant_id, endpoint_id)
    after: tuple[datetime, uuid.UUID] | None = None
    if starting_after is not None:
        after = await repository.cursor_of_delivery(session, endpoint_id, starting_after)
        if after is None:
            raise InvalidCursor(f"No delivery {starting_after}.", param="starting_after")
    return await repository.deliveries_of(session, endpoint_id, limit=limit, after=after)


async def redeliver(
    session: AsyncSession,
    tenant_id: uuid.UUID | None,
    endpoint_id: uuid.UUID,
    delivery_id: uuid.UUID,
    settings: Settings,
) -> tuple[WebhookDelivery, list[WebhookAttempt]]:
    """Send a delivery again now, with its webhook-id and body."""
    await get_endpoint(session, tenant_id, endpoint_id)
    delivery = await repository.get_delivery(session, endpoint_id, delivery_id)
    if delivery is None:
        raise DeliveryNotFound(f"No delivery {delivery_id}.", param="delivery_id")
    await repository.resend(session, delivery, last_pos=len(settings.tenant_webhook_retry_schedule))
    await repository.wake_senders(session)
    await session.refresh(delivery)
    return delivery, (await repository.attempts_of(session, [delivery.id]))[delivery.id]


async def default_secret(session: AsyncSession, tenant_id: uuid.UUID) -> str:
    return (await repository.signing_key(session, tenant_id)).secret


async def disable_endpoint(
    sessionmaker: async_sessionmaker[AsyncSession], endpoint_id: uuid.UUID, reason: str
) -> None:
    """The gateway gives up on an endpoint (410, or failing for FOLEY_TENANT_WEBHOOK_DISABLE_AFTER):
    disabled, said in the log and in the audit log; the tenant sees it on the endpoint
    (``enabled``, ``disabled_reason``) and re-enables it with an update."""
    async with unit_of_work(sessionmaker) as session:
        endpoint = await repository.get_endpoint(session, None, endpoint_id, lock=True)
        if endpoint is None or not endpoint.enabled:
            return
        endpoint.enabled = False
        endpoint.disabled_reason = reason[:200]
        endpoint.updated_at = utcnow()  # see update_endpoint
        await audit.record(
            session,
            actor="webhooks",
            action="webhook_endpoint.disabled",
            target_type="webhook_endpoint",
            target_id=endpoint.id,
            before={"enabled": True},
            after={"enabled": False, "reason": reason, "tenant_id": str(endpoint.tenant_id)},
        )
    log.warning(
        "webhook endpoint disabled",
        endpoint_id=str(endpoint_id),
        tenant_id=str(endpoint.tenant_id),
        url=endpoint.url,
        reason=reason,
    )
