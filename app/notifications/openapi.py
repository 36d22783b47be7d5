"""The events as OpenAPI 3.1 describes what an API calls: its ``webhooks`` section, one operation
per event type, with the payload's schema and an example."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from app.jobs.schemas import JobOut
from app.notifications.events import BUDGET_EVENT_TYPES, JOB_EVENT_TYPES, PING

HEADERS = """

Every delivery is a `POST` with `Content-Type: application/json` and the Standard Webhooks
headers: `webhook-id` (the same on every attempt: deduplicate on it), `webhook-timestamp` (unix
seconds of this attempt) and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
`{webhook-id}.{webhook-timestamp}.{body}` keyed with the endpoint's secret; two entries,
space-separated, during a rotation's grace). Verify with the `standardwebhooks` package:
`Webhook(secret).verify(body, headers)`. Answer 2xx within 10 s; anything else is retried
(immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), 410 disables the endpoint."""

_JOB_EXAMPLE = {
    "object": "job",
    "id": "0f8b6c1e-3d0a-4a53-9f57-2f7c1e5b9a10",
    "model": "fal-ai/kling-video/video-to-audio",
    "status": "succeeded",
    "input": {"video_url": "https://example.com/clip.mp4", "prompt": "footsteps on gravel"},
    "result": {"prompt": "footsteps on gravel", "video": None, "audio": None},
    "error": None,
    "upstream": {
        "provider": "fal",
        "endpoint": "fal-ai/kling-video/video-to-audio",
        "request_id": "3c3f1a52-8d0e-4a8e-b1e4-4d2a6f0b7c11",
        "queue_position": None,
    },
    "logs": [],
    "metrics": {"queue_s": 0.4, "run_s": 6.2, "inference_s": 6.1, "total_s": 6.6},
    "data_removed": False,
    "probe": None,
    "usage": None,
    "metadata": {"order": "42"},
    "created_at": "2026-12-07T12:00:00Z",
    "started_at": "2026-12-07T12:00:00.4Z",
    "completed_at": "2026-12-07T12:00:06.6Z",
    "urls": {
        "self": "https://foley.example/v1/jobs/0f8b6c1e-3d0a-4a53-9f57-2f7c1e5b9a10",
        "cancel": "https://foley.example/v1/jobs/0f8b6c1e-3d0a-4a53-9f57-2f7c1e5b9a10/cancel",
        "events": "https://foley.example/v1/jobs/0f8b6c1e-3d0a-4a53-9f57-2f7c1e5b9a10/events",
    },
}


class JobEventPayload(BaseModel):
    """A job's event: the job resource exactly as `GET /v1/jobs/{id}` shows it when the event is
    sent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "job.succeeded",
                    "timestamp": "2026-12-07T12:00:06.6Z",
                    "data": _JOB_EXAMPLE,
                }
            ]
        }
    )

    type: Literal[tuple(JOB_EVENT_TYPES)] = Field(description="The event type.")  # type: ignore[valid-type]
    timestamp: datetime = Field(description="When the transition was committed.")
    data: JobOut = Field(description="The job, as GET /v1/jobs/{id} answers it.")


class BudgetData(BaseModel):
    object: Literal["budget"] = Field(description="Always budget.")
    tenant_id: str = Field(description="The tenant.")
    threshold_pct: int = Field(description="The threshold crossed, in percent of the budget.")
    crossed_in_period_start: datetime = Field(description="The period it was crossed in.")
    budget_usd: str | None = Field(default=None, description="The budget, in USD.")
    period_start: datetime | None = Field(default=None, description="The current period's start.")
    period_end: datetime | None = Field(default=None, description="When the period resets.")
    spent_usd: str | None = Field(default=None, description="Spent in the period.")
    reserved_usd: str | None = Field(default=None, description="Reserved by running jobs.")
    remaining_usd: str | None = Field(default=None, description="What is left.")


class BudgetEventPayload(BaseModel):
    """A budget threshold crossed: the tenant's budget as it stands."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "budget.threshold_crossed",
                    "timestamp": "2026-12-07T12:00:06Z",
                    "data": {
                        "object": "budget",
                        "tenant_id": "5b0e3a8e-0a43-4b8f-8f1c-7f61e4d1b2a3",
                        "threshold_pct": 80,
                        "crossed_in_period_start": "2026-12-01T00:00:00Z",
                        "budget_usd": "25.000000",
                        "period_start": "2026-12-01T00:00:00Z",
                        "period_end": "2027-01-01T00:00:00Z",
                        "spent_usd": "20.125000",
                        "reserved_usd": "0.070000",
                        "remaining_usd": "4.805000",
                    },
                }
            ]
        }
    )

    type: Literal["budget.threshold_crossed"] = Field(description="The event type.")
    timestamp: datetime = Field(description="When the threshold was crossed.")
    data: BudgetData = Field(description="The tenant's budget.")


class PingData(BaseModel):
    object: Literal["webhook_endpoint"] = Field(description="Always webhook_endpoint.")
    id: str = Field(description="The endpoint pinged.")
    url: str = Field(description="Its URL.")


class PingPayload(BaseModel):
    """Sent by `POST /v1/webhook-endpoints/{id}/test`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "ping",
                    "timestamp": "2026-12-07T12:00:00Z",
                    "data": {
                        "object": "webhook_endpoint",
                        "id": "9a1d2c3b-4e5f-4a6b-8c7d-0e1f2a3b4c5d",
                        "url": "https://example.com/foley-hooks",
                    },
                }
            ]
        }
    )

    type: Literal["ping"] = Field(description="The event type.")
    timestamp: datetime = Field(description="When the test was asked for.")
    data: PingData = Field(description="The endpoint.")


def install_webhooks(app: FastAPI) -> None:
    """One ``webhooks`` entry per event type (they share their payload's schema)."""
    entries: list[tuple[str, str, type[BaseModel]]] = [
        *((kind, text, JobEventPayload) for kind, text in JOB_EVENT_TYPES.items()),
        *((kind, text, BudgetEventPayload) for kind, text in BUDGET_EVENT_TYPES.items()),
        (PING, "A test of the endpoint.", PingPayload),
    ]
    for kind, text, payload in entries:
        _add(app, kind, text, payload)


def _add(app: FastAPI, kind: str, text: str, payload: type[BaseModel]) -> None:
    async def receive(body: Any) -> None:  # documentation only: the tenant serves it
        return None

    receive.__annotations__["body"] = payload
    app.webhooks.add_api_route(
        kind,
        receive,
        methods=["POST"],
        summary=kind,
        description=text + HEADERS,
        operation_id=f"webhook_{kind.replace('.', '_')}",
        status_code=200,
        responses={200: {"description": "Received (any 2xx)."}},
        tags=["webhooks"],
    )
