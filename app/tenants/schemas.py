from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool, field_validator
from pydantic_core import PydanticCustomError

from app.kit.clock import utcnow
from app.kit.examples import with_examples
from app.kit.money import UsdAmount, micros_to_usd
from app.kit.text import UtcDatetime, column_int, column_text, integer, number
from app.models import ApiKey, Tenant
from app.usage.periods import parse_period
from app.usage.schemas import BudgetOut

TenantName = column_text(Tenant.name)
KeyName = column_text(ApiKey.name)
RatePerMinute = column_int(Tenant.rate_limit_per_minute, ge=1)
InFlight = column_int(Tenant.max_in_flight, ge=1)


class TenantCreate(BaseModel):
    model_config = with_examples({"name": "video-team"})
    name: TenantName = Field(description="A name for people; need not be unique.")  # type: ignore[valid-type]


class TenantUpdate(BaseModel):
    """Partial update: fields left out are unchanged; ``null`` removes a budget or a limit."""

    model_config = with_examples(
        {"budget_usd": "25.00", "budget_period": "month", "rate_limit_per_minute": 60}
    )

    name: TenantName | None = Field(default=None, description="A new name.")  # type: ignore[valid-type]
    budget_usd: UsdAmount | None = Field(
        default=None,
        description='The budget per period in USD, a decimal string, e.g. "25.00"; null removes '
        "the budget.",
    )
    budget_period: str | None = Field(
        default=None,
        description="'month' (calendar month, UTC) or a duration from 1 hour to 3650 days: "
        "'30d', '24h', '1.5d', or seconds.",
        # what parse_period takes, for the schema (the check keeps its own messages)
        json_schema_extra={"pattern": r"^(month|\d{1,10}(\.\d{1,6})?[dhs]?)$", "maxLength": 32},
    )
    budget_thresholds: list[integer(ge=1, le=1000)] | None = Field(  # type: ignore[valid-type]
        default=None,
        max_length=20,
        description="Percentages that record an event when crossed (50/80/100).",
    )
    rate_limit_per_minute: RatePerMinute | None = Field(  # type: ignore[valid-type]
        default=None,
        description="Job creations allowed in any 60 s; null: the gateway's default.",
    )
    max_in_flight: InFlight | None = Field(  # type: ignore[valid-type]
        default=None,
        description="The tenant's requests at fal at once at most; null: the gateway's default.",
    )
    # numeric(8, 3): a smaller weight would be stored as 0
    weight: number(ge=0.001, le=1000) | None = Field(  # type: ignore[valid-type]
        default=None,
        description="The tenant's share of fal's capacity when tenants compete (default 1).",
    )
    suspended: StrictBool | None = Field(
        default=None, description="true: refuse the tenant's new jobs (403 tenant_suspended)."
    )
    cache_default: StrictBool | None = Field(
        default=None,
        description="true: the tenant's jobs use the result cache unless a request says "
        '"cache": false (default false).',
    )

    @field_validator("budget_period")
    @classmethod
    def _period(cls, v: str | None) -> str | None:
        return None if v is None else parse_period(v)

    @field_validator("budget_thresholds")
    @classmethod
    def _thresholds(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(not 1 <= p <= 1000 for p in v):
            raise ValueError("thresholds are percentages between 1 and 1000")
        return None if v is None else sorted(set(v))


class TenantOut(BaseModel):
    object: Literal["tenant"] = Field(default="tenant", description="Always tenant.")
    id: uuid.UUID = Field(description="The tenant's id.")
    name: str = Field(description="The tenant's name.")
    budget_usd: str | None = Field(description="The budget per period in USD; null: none.")
    budget_period: str = Field(description="month, or a duration in seconds ('2592000s').")
    budget_thresholds: list[int] = Field(description="Percentages that record an event.")
    rate_limit_per_minute: int | None = Field(description="Job creations in any 60 s at most.")
    max_in_flight: int | None = Field(description="Requests at fal at once at most.")
    weight: float = Field(description="Share of fal's capacity when tenants compete.")
    suspended_at: datetime | None = Field(description="Since when new jobs are refused.")
    cache_default: bool = Field(
        default=False, description="The tenant's jobs use the result cache unless they opt out."
    )
    created_at: datetime = Field(description="When the tenant was created.")
    budget: BudgetOut | None = Field(
        default=None, description="The current period: spent, reserved, remaining."
    )

    @classmethod
    def of(cls, t: Tenant, budget: dict[str, Any] | None = None) -> TenantOut:
        return cls(
            id=t.id,
            name=t.name,
            budget_usd=micros_to_usd(t.budget_micros),
            budget_period=t.budget_period,
            budget_thresholds=list(t.budget_thresholds or []),
            rate_limit_per_minute=t.rate_limit_per_minute,
            max_in_flight=t.max_in_flight,
            weight=float(t.weight),
            suspended_at=t.suspended_at,
            cache_default=t.cache_default,
            created_at=t.created_at,
            budget=BudgetOut.model_validate(budget) if budget else None,
        )


class ApiKeyCreate(BaseModel):
    model_config = with_examples({"name": "ci", "read_only": False, "expires_at": None})
    name: KeyName | None = Field(  # type: ignore[valid-type]
        default=None, description="What the key is for (e.g. ci, staging)."
    )
    read_only: StrictBool = Field(default=False, description="GET only: refused on every mutation.")
    expires_at: UtcDatetime | None = Field(
        default=None, description="The key stops working then (in the future; UTC if no offset)."
    )

    @field_validator("expires_at")
    @classmethod
    def _in_the_future(cls, v: datetime | None) -> datetime | None:
        if v is not None and v <= utcnow():
            raise PydanticCustomError("key_already_expired", "expires_at is in the past", {})
        return v


class ApiKeyRotate(BaseModel):
    model_config = with_examples({"grace_seconds": 3600})
    grace_seconds: integer(ge=0, le=30 * 86400) = Field(  # type: ignore[valid-type]
        default=3600,
        description="The old key keeps working this long, then expires.",
    )


class ApiKeyOut(BaseModel):
    object: Literal["api_key"] = Field(default="api_key", description="Always api_key.")
    id: uuid.UUID = Field(description="The key's id.")
    tenant_id: uuid.UUID = Field(description="The tenant it authenticates.")
    name: str | None = Field(description="What the key is for.")
    prefix: str = Field(description="The secret's first characters, to recognise it.")
    read_only: bool = Field(description="GET only.")
    created_at: datetime = Field(description="When it was created.")
    expires_at: datetime | None = Field(description="When it stops working, if it does.")
    revoked_at: datetime | None = Field(description="When it was revoked, if it was.")
    last_used_at: datetime | None = Field(description="Its last use (written once a minute).")

    @classmethod
    def of(cls, k: ApiKey) -> ApiKeyOut:
        return cls.model_validate(k, from_attributes=True)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret. Shown only in this response: store it now.")


class ApiKeyRotated(BaseModel):
    object: Literal["api_key_rotation"] = Field(
        default="api_key_rotation", description="Always api_key_rotation."
    )
    old: ApiKeyOut = Field(description="The old key, now expiring after the grace period.")
    new: ApiKeyCreated = Field(description="The new key, with its secret (shown once).")
