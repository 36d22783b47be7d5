"""Inbound fal webhooks: store (unique on fal's request id), attribute to a job, wake a worker.

Processing happens in the worker (it reads the stored event on the job's next step), so the
answer to fal is immediate and a slow step never makes fal retry.
"""

from __future__ import annotations

import re
import uuid

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.jobs.repository import notify_workers
from app.kit.clock import utcnow
from app.models import FalWebhookEvent, Job, SubmitState, WebhookEventState
from app.upstream.schemas import VerifiedWebhook
from app.usage import ledger
from app.webhooks.tokens import JobTokens

log = structlog.get_logger(__name__)


async def record_fal_webhook(
    session: AsyncSession,
    webhook: VerifiedWebhook,
    *,
    tokens: JobTokens,
    job_param: str | None,
    token_param: str | None,
    bill_422: bool = False,
) -> str:
    """Store the event and point its job at it. Returns the outcome for metrics/logs:
    ``matched``, ``attached`` (an ambiguous submit found its request), ``duplicate`` or
    ``unmatched``."""
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

    job = (
        await session.scalars(
            select(Job).where(Job.upstream_request_id == webhook.request_id).with_for_update()
        )
    ).first()
    outcome = "matched"
    event = await session.get(FalWebhookEvent, event_id)
    assert event is not None
    if job is None and claimed_job is not None:
        # The row lock waits for a worker still recording this very submit's answer.
        candidate = await session.get(
            Job, claimed_job, with_for_update=True, populate_existing=True
        )
        if candidate is None:
            pass
        elif candidate.upstream_request_id == webhook.request_id:
            job = candidate  # the worker recorded it while we waited
        elif candidate.upstream_request_id is None and candidate.submit_state in (
            SubmitState.sending,
            SubmitState.ambiguous,
        ):
            # The submit's answer was lost (or is still on its way), but fal ran it: this is
            # that request.
            candidate.upstream_request_id = webhook.request_id
            candidate.submit_state = SubmitState.submitted
            await ledger.record_request(
                session, candidate, webhook.request_id, unit=ledger.unit_of(candidate)
            )
            job, outcome = candidate, "attached"
        else:
            # Another request fal ran for this job (an ambiguous submit that was retried): not
            # the job's result, but billed by fal, so billed to the tenant.
            await ledger.settle_orphan(
                session,
                candidate,
                webhook.request_id,
                _billing_outcome(webhook),
                bill_422=bill_422,
            )
            event.job_id = candidate.id
            event.state = WebhookEventState.processed
            event.processed_at = utcnow()
            log.warning(
                "fal ran a second request for a job; billed as an orphan",
                job_id=str(candidate.id),
                request_id=webhook.request_id,
            )
            return "orphan"
    if job is None:
        event.state = WebhookEventState.unmatched
        log.warning(
            "fal webhook for an unknown request",
            request_id=webhook.request_id,
            claimed_job=str(claimed_job) if claimed_job else None,
        )
        return "unmatched"
    event.job_id = job.id
    if not job.status.terminal:
        job.next_action_at = utcnow()
        await notify_workers(session, "webhook")
    return outcome if deliveries == 1 else "duplicate"


_STATUS = re.compile(r"\b([1-5]\d\d)\b")


def _billing_outcome(webhook: VerifiedWebhook) -> ledger.Outcome:
    if webhook.status == "OK":
        return ledger.Outcome("succeeded")  # no metrics in a webhook: settled at the estimate
    match = _STATUS.search(webhook.error or "")
    code = int(match.group(1)) if match else 500
    if code == 422:
        return ledger.Outcome("upstream_422")
    return ledger.Outcome("upstream_5xx" if code >= 500 else "upstream_4xx")


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
