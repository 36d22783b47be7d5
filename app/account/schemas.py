"""What `GET /v1/me` answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.kit.examples import with_examples


class MeTenant(BaseModel):
    id: uuid.UUID = Field(description="Your tenant's id.")
    name: str = Field(description="Your tenant's name.")
    suspended: bool = Field(description="New jobs are refused (403 tenant_suspended) while true.")


class MeLimits(BaseModel):
    rate_limit_per_minute: int | None = Field(
        description="Job creations allowed in any 60 s (null: unlimited)."
    )
    max_in_flight: int | None = Field(
        description="Your jobs at fal at once, at most (null: only the account's own limit)."
    )
    weight: float = Field(description="Your share of fal's concurrency against other tenants.")


class MeBudget(BaseModel):
    budget_usd: str = Field(description="The budget of each period, in USD.")
    period: str = Field(description="`month` (calendar, UTC) or a duration such as `30d`.")
    period_start: datetime = Field(description="When the current period began.")
    resets_at: datetime = Field(description="When the current period ends and spend resets.")
    spent_usd: str = Field(description="Settled cost in this period.")
    reserved_usd: str = Field(description="Estimated cost of your unfinished jobs, held.")
    remaining_usd: str = Field(
        description="What new jobs may still reserve: budget − spent − reserved."
    )


class MeKey(BaseModel):
    id: uuid.UUID = Field(description="The key's id.")
    name: str | None = Field(description="The key's name, if it was given one.")
    prefix: str = Field(description="The key's first characters, to recognise it.")
    scope: Literal["read_write", "read_only"] = Field(
        description="read_only keys can only read (GET); others may also create and cancel."
    )
    created_at: datetime = Field(description="When the key was created.")
    expires_at: datetime | None = Field(description="When the key stops working (null: never).")
    last_used_at: datetime | None = Field(description="When it was last used (about a minute).")


class MeOut(BaseModel):
    """Who you are to the gateway: the key you called with, its tenant, limits and budget."""

    model_config = with_examples(
        {
            "object": "me",
            "tenant": {"id": "9b0c…", "name": "video-team", "suspended": False},
            "limits": {"rate_limit_per_minute": 120, "max_in_flight": 4, "weight": 1.0},
            "budget": {
                "budget_usd": "25.000000",
                "period": "month",
                "period_start": "2026-12-01T00:00:00Z",
                "resets_at": "2027-01-01T00:00:00Z",
                "spent_usd": "3.115000",
                "reserved_usd": "0.070000",
                "remaining_usd": "21.815000",
            },
            "key": {
                "id": "5e1f…",
                "name": "ci",
                "prefix": "fk_live_3k9",
                "scope": "read_write",
                "created_at": "2026-12-01T09:00:00Z",
                "expires_at": None,
                "last_used_at": "2026-12-07T10:00:00Z",
            },
        }
    )

    object: Literal["me"] = Field(default="me", description="Always me.")
    tenant: MeTenant = Field(description="Your tenant.")
    limits: MeLimits = Field(description="Your limits in force (yours, or the gateway's defaults).")
    budget: MeBudget | None = Field(description="Your budget now (null: no budget).")
    key: MeKey = Field(description="The API key this request was made with.")
