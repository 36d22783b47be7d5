"""What a webhook carries: ``{"type", "timestamp", "data"}``, the data being the job resource
exactly as ``GET /v1/jobs/{id}`` answers it (app.jobs.service.present, the same function), the
tenant's budget, or the endpoint for a ping."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.jobs import service as jobs_service
from app.models import Job, Tenant
from app.usage import budgets

# Where the job resource's URLs point when FOLEY_PUBLIC_URL is unset (`foley api`'s default).
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def base_url(settings: Settings) -> str:
    return settings.public_url or DEFAULT_BASE_URL


def body(kind: str, timestamp: datetime, data: dict[str, Any]) -> str:
    """The message, serialized once: every attempt signs and sends these very bytes."""
    return json.dumps(
        {"type": kind, "timestamp": timestamp.isoformat(), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


async def jobs_data(
    session: AsyncSession, jobs: list[Job], settings: Settings
) -> dict[uuid.UUID, dict[str, Any]]:
    """Each job's resource as GET shows it now (its usage read in one query for all)."""
    shown = await jobs_service.present(session, jobs, base_url(settings))
    return {out.id: out.model_dump(mode="json") for out in shown}


async def budget_data(
    session: AsyncSession, tenant: Tenant, threshold_pct: int, period_start: datetime
) -> dict[str, Any]:
    """The tenant's budget as it stands, and the threshold that was crossed."""
    view = await budgets.view(session, tenant)
    current = view.to_dict() if view is not None else {}
    return {
        "object": "budget",
        "tenant_id": str(tenant.id),
        "threshold_pct": threshold_pct,
        "crossed_in_period_start": period_start.isoformat(),
        **current,
    }


def endpoint_data(endpoint_id: uuid.UUID, url: str) -> dict[str, Any]:
    return {"object": "webhook_endpoint", "id": str(endpoint_id), "url": url}
