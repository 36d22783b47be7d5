"""`GET /v1/me`: the caller's tenant, limits and budget as they apply now."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.dependencies import Principal
from app.config import Settings
from app.kit.money import micros_to_usd
from app.usage import budgets


async def me(session: AsyncSession, principal: Principal, settings: Settings) -> dict[str, Any]:
    tenant, key = principal.tenant, principal.api_key
    view = await budgets.view(session, tenant)
    budget = None
    if view is not None:
        budget = {
            "budget_usd": micros_to_usd(view.budget_micros),
            "period": tenant.budget_period,
            "period_start": view.period_start,
            "resets_at": view.period_end,
            "spent_usd": micros_to_usd(view.spent_micros),
            "reserved_usd": micros_to_usd(view.reserved_micros),
            "remaining_usd": micros_to_usd(view.remaining_micros),
        }
    return {
        "tenant": {
            "id": tenant.id,
            "name": tenant.name,
            "suspended": tenant.suspended_at is not None,
        },
        # The per-tenant value where one is set, else the gateway's default (what is enforced).
        "limits": {
            "rate_limit_per_minute": tenant.rate_limit_per_minute or settings.rate_limit_per_minute,
            "max_in_flight": tenant.max_in_flight or settings.max_in_flight_per_tenant,
            "weight": tenant.weight,
        },
        "budget": budget,
        "key": {
            "id": key.id,
            "name": key.name,
            "prefix": key.prefix,
            "scope": "read_only" if key.read_only else "read_write",
            "created_at": key.created_at,
            "expires_at": key.expires_at,
            "last_used_at": key.last_used_at,
        },
    }
