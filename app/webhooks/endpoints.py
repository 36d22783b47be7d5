from __future__ import annotations

from typing import Annotated, Literal

import structlog
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from app.db.session import SessionDep
from app.kit.problems import ProblemError, Unauthorized, problems
from app.metrics import WEBHOOKS_RECEIVED, WEBHOOKS_REJECTED
from app.upstream.errors import WebhookKeysUnavailableError, WebhookVerificationError
from app.webhooks.service import record_fal_webhook

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


class WebhookKeysUnavailable(ProblemError):
    status = 503
    code = "webhook_keys_unavailable"


# Read raw (the signature covers the bytes), so described here rather than parsed by FastAPI.
FAL_WEBHOOK_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "description": "fal's webhook payload, signed with Ed25519 (X-Fal-Webhook-* "
                "headers).",
            },
            "example": {
                "request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b",
                "gateway_request_id": "764cabcf-b745-4b3e-ae38-1200304cf45b",
                "status": "OK",
                "payload": {"video": {"url": "https://v3.fal.media/files/x/out.mp4"}},
            },
        }
    },
}


class WebhookReceived(BaseModel):
    status: Literal["received"] = Field(description="Verified and stored; processed later.")


@router.post(
    "/fal",
    status_code=200,
    response_model=WebhookReceived,
    openapi_extra={"requestBody": FAL_WEBHOOK_BODY},
    responses=problems(
        s401="Signature missing, invalid, or outside the time window.",
        s503="fal's signing keys cannot be fetched right now (fal retries).",
    ),
)
async def fal_webhook(
    request: Request,
    session: SessionDep,
    job: Annotated[str | None, Query(description="The job the webhook URL was made for.")] = None,
    token: Annotated[str | None, Query(description="The job's token in that URL.")] = None,
) -> WebhookReceived:
    """fal's completion webhook (Ed25519-signed; verified against fal's JWKS on the raw body)."""
    raw = await request.body()
    try:
        verified = await request.app.state.webhook_verifier.verify(request.headers, raw)
    except WebhookVerificationError as exc:
        WEBHOOKS_REJECTED.labels(reason=exc.reason).inc()
        log.warning("fal webhook rejected", reason=exc.reason)
        raise Unauthorized(
            f"Webhook rejected: {exc.reason}.", code="webhook_signature_invalid"
        ) from exc
    except WebhookKeysUnavailableError as exc:
        WEBHOOKS_REJECTED.labels(reason="keys_unavailable").inc()
        # fal retries non-2xx deliveries, so a 503 here loses nothing.
        raise WebhookKeysUnavailable("fal's signing keys cannot be fetched right now.") from exc
    outcome = await record_fal_webhook(
        session,
        verified,
        store=request.app.state.job_store,
        tokens=request.app.state.job_tokens,
        queue_url=request.app.state.settings.fal_queue_url,
        job_param=job,
        token_param=token,
    )
    WEBHOOKS_RECEIVED.labels(outcome=outcome).inc()
    return WebhookReceived(status="received")
