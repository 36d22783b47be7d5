"""Inbound fal webhooks: store (unique on fal's request id), point at their job, wake a worker.

Processing happens in the worker (it reads the stored event on the job's next step), so the
answer to fal is immediate and a slow step never makes fal retry.
"""

from __future__ import annotations

import uuid

import asyncpg
import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.driver import driver_of
from app.jobs.store import JobStore
from app.kit.clock import utcnow
from app.models import FalWebhookEvent, WebhookEventState
from app.upstream.outcome import error_status
from app.upstream.schemas import VerifiedWebhook
from app.usage import ledger
from app.usage.billing import failure_kind
from app.webhooks.tokens import JobTokens

log = structlog.get_logger(__name__)


async def record_fal_webhook(
    session: AsyncSession,
    webhook: VerifiedWebhook,
    *,
    store: JobStore,
    tokens: JobTokens,
    queue_url: str,
    job_param: str | None,
    token_param: str | None,
) -> str:
    """Store the event and point its job at it. Returns the outcome for metrics/logs:
    ``matched``, ``attached`` (an ambiguous submit found its request), ``orphan``,
    ``earlier_attempt`` (a model the job fell back from), ``duplicate`` or ``unmatched``."""
    claimed_job = _job_from_token(tokens, job_param, token_param)
    inserted = await session.execute(
        insert(FalWebhookEvent)
        .values(
            id=uuid.uuid4(),
            request_id=webhook.request_id,
            gateway_request_id=webhook.gateway_request_id,
            status=webhook.status,
            body=webhook.body.model_dump(mode="json"),
            state=WebhookEventState.received,
            deliveries=1,
        )
        .on_conflict_do_update(
            index_elements=[FalWebhookEvent.request_id],
            set_={"deliveries": FalWebhookEvent.deliveries + 1},
        )
        .returning(FalWebhookEvent.id, FalWebhookEvent.deliveries, FalWebhookEvent.job_id)
    )
    event_id, deliveries, event_job = inserted.one()
    if deliveries > 1 and event_job is not None:
        return "duplicate"
    event = await session.get(FalWebhookEvent, event_id)
    assert event is not None
    job, outcome = await store.attach_webhook(
        session, webhook.request_id, claimed_job, queue_url=queue_url
    )
    if job is None:
        event.state = WebhookEventState.unmatched
        log.warning(
            "fal webhook for an unknown request",
            fal_request_id=webhook.request_id,
            claimed_job=str(claimed_job) if claimed_job else None,
        )
        return "unmatched"
    event.job_id = job.id
    if outcome == "earlier_attempt":
        event.state = WebhookEventState.processed
        event.processed_at = utcnow()
        return outcome
    if outcome == "orphan":
        # Another request fal ran for this job (an ambiguous submit that was retried): not the
        # job's result, but billed by fal, so billed to the tenant.
        await ledger.settle_orphan(
            session, job, webhook.request_id, _billing_outcome(webhook), bill_422=store.bill_422
        )
        event.state = WebhookEventState.processed
        event.processed_at = utcnow()
        log.warning(
            "fal ran a second request for a job; billed as an orphan",
            job_id=str(job.id),
            fal_request_id=webhook.request_id,
        )
        return "orphan"
    return outcome if deliveries == 1 else "duplicate"


async def event_of_request(session: AsyncSession, request_id: str) -> FalWebhookEvent | None:
    """The webhook fal sent for this request, if one arrived."""
    stmt = select(FalWebhookEvent).where(FalWebhookEvent.request_id == request_id)
    return (await session.scalars(stmt)).first()


async def mark_processed(executor: AsyncSession | asyncpg.Connection, event_id: uuid.UUID) -> None:
    """The webhook event, processed (once), in the transaction of the transition it told of."""
    conn = await driver_of(executor)
    await conn.execute(
        "UPDATE fal_webhook_events SET state = $2, processed_at = $3"
        " WHERE id = $1 AND processed_at IS NULL",
        event_id,
        WebhookEventState.processed.value,
        utcnow(),
    )


def _billing_outcome(webhook: VerifiedWebhook) -> ledger.Outcome:
    if webhook.status == "OK":
        return ledger.Outcome("succeeded")  # no metrics in a webhook: settled at the estimate
    return ledger.Outcome(failure_kind(error_status(webhook.error)))


def _job_from_token(
    tokens: JobTokens, job_param: str | None, token_param: str | None
) -> uuid.UUID | None:
    if not job_param or not token_param:
        return None
    try:
        job_id = uuid.UUID(job_param)
    except ValueError:
        return None
    return job_id if tokens.verify(job_id, token_param) else None
