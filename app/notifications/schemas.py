"""The webhook endpoints API's models, and the event payloads as OpenAPI's ``webhooks`` shows
them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from app.kit.examples import with_examples
from app.kit.text import bounded_text, column_text, integer
from app.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from app.notifications.events import EVENT_TYPES

Description = column_text(WebhookEndpoint.description)
Url = bounded_text(2048)
EVENTS_DESCRIPTION = (
    "The event types sent to it: any of " + ", ".join(EVENT_TYPES) + ". Omitted or null: "
    "every type, those added later included."
)
URL_DESCRIPTION = (
    "Where deliveries are POSTed (http or https). Loopback, private and metadata addresses "
    "are refused unless the gateway's outbound settings allow them."
)


EventType = Literal[tuple(EVENT_TYPES)]  # type: ignore[valid-type]


def _unique(value: list[str] | None) -> list[str] | None:
    return None if value is None else list(dict.fromkeys(value))


class EndpointCreate(BaseModel):
    model_config = with_examples(
        {"url": "https://example.com/foley-hooks", "events": ["job.succeeded", "job.failed"]},
        {"url": "https://example.com/all", "description": "every event"},
    )

    url: Url = Field(description=URL_DESCRIPTION)  # type: ignore[valid-type]
    events: list[EventType] | None = Field(  # type: ignore[valid-type]
        default=None, min_length=1, max_length=50, description=EVENTS_DESCRIPTION
    )
    description: Description | None = Field(  # type: ignore[valid-type]
        default=None, description="A note for yourself."
    )

    _events = field_validator("events")(_unique)


class EndpointUpdate(BaseModel):
    model_config = with_examples({"enabled": True}, {"events": ["job.succeeded"]})

    url: Url | None = Field(default=None, description=URL_DESCRIPTION)  # type: ignore[valid-type]
    events: list[EventType] | None = Field(  # type: ignore[valid-type]
        default=None, min_length=1, max_length=50, description=EVENTS_DESCRIPTION
    )
    description: Description | None = Field(  # type: ignore[valid-type]
        default=None, description="A note for yourself."
    )
    enabled: bool | None = Field(
        default=None,
        description="false pauses deliveries (they wait); true resumes them, also after the "
        "gateway disabled the endpoint (410, or failing for 5 days).",
    )

    _events = field_validator("events")(_unique)


class EndpointOut(BaseModel):
    object: Literal["webhook_endpoint"] = Field(
        default="webhook_endpoint", description="Always webhook_endpoint."
    )
    id: uuid.UUID = Field(description="The endpoint's id.")
    tenant_id: uuid.UUID = Field(description="Its tenant.")
    url: str = Field(description="Where deliveries are POSTed.")
    events: list[str] | None = Field(description="Its event types (null: every type).")
    description: str | None = Field(description="Your note.")
    enabled: bool = Field(description="Deliveries are attempted (false: they wait).")
    disabled_reason: str | None = Field(description="Why the gateway disabled it, if it did.")
    failing_since: datetime | None = Field(
        description="Since when every attempt has failed (null: the last one succeeded)."
    )
    previous_secret_expires_at: datetime | None = Field(
        description="Until when the secret before the last rotation signs too."
    )
    created_at: datetime = Field(description="When it was created.")
    updated_at: datetime = Field(description="When it last changed.")

    @classmethod
    def of(cls, e: WebhookEndpoint) -> EndpointOut:
        return cls(
            id=e.id,
            tenant_id=e.tenant_id,
            url=e.url,
            events=e.events,
            description=e.description,
            enabled=e.enabled,
            disabled_reason=e.disabled_reason,
            failing_since=e.failing_since,
            previous_secret_expires_at=e.previous_expires_at,
            created_at=e.created_at,
            updated_at=e.updated_at,
        )


class EndpointCreated(EndpointOut):
    secret: str = Field(
        description="The signing secret (whsec_…), shown now and at rotations only: verify "
        "deliveries with it (Standard Webhooks)."
    )


class RotateSecret(BaseModel):
    model_config = with_examples({"grace_seconds": 86400})

    grace_seconds: integer(ge=0, le=30 * 86400) = Field(  # type: ignore[valid-type]
        default=86400,
        description="How long the old secret keeps signing beside the new one (every delivery "
        "then carries both signatures, space-separated).",
    )


class SigningSecretOut(BaseModel):
    object: Literal["webhook_secret"] = Field(
        default="webhook_secret", description="Always webhook_secret."
    )
    key: str = Field(description="The secret (whsec_…) that signs your jobs' own webhooks.")


class AttemptOut(BaseModel):
    attempted_at: datetime = Field(description="When it was made.")
    status_code: int | None = Field(description="The receiver's status (null: no answer).")
    duration_ms: int = Field(description="How long it took.")
    error: str | None = Field(description="Why it failed (null: a 2xx).")


class DeliveryOut(BaseModel):
    object: Literal["webhook_delivery"] = Field(
        default="webhook_delivery", description="Always webhook_delivery."
    )
    id: uuid.UUID = Field(description="The delivery's id (redeliver it by this).")
    endpoint_id: uuid.UUID = Field(description="Its endpoint.")
    event: str = Field(description="The event type (or ping).")
    webhook_id: str = Field(description="Its webhook-id header, the same on every attempt.")
    job_id: uuid.UUID | None = Field(description="The job it is about, if any.")
    status: DeliveryStatus = Field(
        description="pending (attempted at next_attempt_at), succeeded or failed."
    )
    next_attempt_at: datetime | None = Field(description="When it is attempted next, if pending.")
    created_at: datetime = Field(description="When it was made (or a job.logs' turn came).")
    completed_at: datetime | None = Field(description="When it succeeded or failed for good.")
    attempts: list[AttemptOut] = Field(description="Every attempt, oldest first.")

    @classmethod
    def of(cls, d: WebhookDelivery, attempts: list[Any]) -> DeliveryOut:
        assert d.endpoint_id is not None
        return cls(
            id=d.id,
            endpoint_id=d.endpoint_id,
            event=d.type,
            webhook_id=d.message_id,
            job_id=d.job_id,
            status=d.status,
            next_attempt_at=d.next_attempt_at if d.status is DeliveryStatus.pending else None,
            created_at=d.created_at,
            completed_at=d.completed_at,
            attempts=[AttemptOut.model_validate(a, from_attributes=True) for a in attempts],
        )
