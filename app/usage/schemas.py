"""The usage API's models: budgets, summaries, prices, estimates."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.catalog.registry import CATALOG
from app.kit.examples import with_examples
from app.kit.money import UsdAmount
from app.kit.text import UtcDatetime, column_text
from app.models import Price
from app.usage.billing import CACHE_HIT


class BudgetOut(BaseModel):
    budget_usd: str | None = Field(description="The budget per period, in USD.")
    period_start: str = Field(
        description="The current period's start (inclusive), ISO 8601.",
        json_schema_extra={"format": "date-time"},
    )
    period_end: str = Field(
        description="The current period's end (exclusive), ISO 8601.",
        json_schema_extra={"format": "date-time"},
    )
    spent_usd: str | None = Field(description="Settled spend in the period, in USD.")
    reserved_usd: str | None = Field(description="Estimates held by jobs not yet settled.")
    remaining_usd: str | None = Field(description="What new jobs may still spend.")


class UsageGroup(BaseModel):
    """One group of the summary: one of day, month or model is set (as grouped by)."""

    tenant: uuid.UUID | None = Field(default=None, description="The tenant (admin summary).")
    day: str | None = Field(default=None, description="The day (UTC), with group_by=day.")
    month: str | None = Field(default=None, description="The month (YYYY-MM), with group_by=month.")
    model: str | None = Field(default=None, description="The model, with group_by=model.")
    jobs: int = Field(description="Billable requests in the group.")
    jobs_by_status: dict[str, int] = Field(description="The same, by the job's final status.")
    units: dict[str, str] = Field(description="Billed units by unit, decimal strings.")
    cost_usd: str | None = Field(description="What the group cost, in USD.")


class UsageSummary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    object: Literal["usage_summary"] = Field(description="Always usage_summary.")
    from_: str = Field(alias="from", description="The first day (UTC), inclusive.")
    to: str = Field(description="The last day (UTC), exclusive.")
    group_by: str = Field(description="day, month or model.")
    data: list[UsageGroup] = Field(description="The groups, in order.")
    total_cost_usd: str | None = Field(description="The whole range's cost, in USD.")


class EstimateOut(BaseModel):
    """``POST /v1/jobs?dry_run=true``: what the job would cost and whether it would be accepted."""

    object: Literal["estimate"] = Field(description="Always estimate.")
    model: str = Field(description="The model's id.")
    input: dict[str, Any] = Field(description="The normalized input, as validated.")
    unit: str = Field(description="What the model is billed by.")
    units: str = Field(description="Estimated units, a decimal string.")
    unit_price_usd: str | None = Field(description="The price per unit in force, in USD.")
    estimated_cost_usd: str | None = Field(description="The estimate, in USD.")
    basis: str = Field(description="What the estimate rests on (probe, default, learned ratio).")
    video_duration_s: float | None = Field(description="The video's length used, if known.")
    allowed: bool = Field(description="Whether the job would be accepted now.")
    reason: str | None = Field(description="Why not (budget_exceeded, tenant_suspended).")
    budget: BudgetOut | None = Field(description="The tenant's current budget period.")


class ValidationEstimate(BaseModel):
    unit: str = Field(description="What the model is billed by.")
    units: str = Field(description="Estimated units, a decimal string.")
    estimated_cost_usd: str | None = Field(description="The estimate, in USD.")
    basis: str = Field(description="What the estimate rests on (probe, default, learned ratio).")


class ValidationOut(BaseModel):
    """``POST /v1/validate``: the verdict on an input, measured as the worker would."""

    object: Literal["validation"] = Field(description="Always validation.")
    model: str = Field(description="The model's id.")
    valid: bool = Field(description="Whether fal would be sent the job.")
    code: str | None = Field(description="Why not, as the code the job would fail with.")
    message: str | None = Field(description="Why not, for people.")
    details: dict[str, Any] | None = Field(
        description="What was measured against the limit (e.g. duration_s, max_duration_s)."
    )
    probe: dict[str, Any] | None = Field(description="The input as measured (PyAV).")
    estimate: ValidationEstimate = Field(description="What the job would cost.")
    segments: list[dict[str, float]] | None = Field(
        default=None,
        description="Longer than the model takes: the segments it would run as, one request "
        "each ({start_s, end_s}, planned evenly: the job splits where the picture cuts, with as "
        "many segments); the estimate is theirs.",
    )


PriceModel = column_text(Price.model)


class PriceIn(BaseModel):
    model_config = with_examples(
        {
            "model": "fal-ai/kling-video/video-to-audio",
            "unit": "video",
            "unit_price_usd": "0.035",
        }
    )
    model: PriceModel = Field(  # type: ignore[valid-type]
        description="A model of GET /v1/models, by id or alias (stored under its id), or "
        "cache_hit: what a result-cache hit costs (unit hit).",
        # the catalog's names, for the schema; others are refused as unknown_model
        json_schema_extra={"enum": [*CATALOG.names(), CACHE_HIT]},
    )
    unit: str = Field(
        pattern="^(video|compute_second|output_second|sample|hit)$",
        description="What one unit is: a video, a compute second at fal, an output second "
        "(every sample's seconds counted), a sample (one output of several); hit for cache_hit "
        "(one reused result).",
    )
    unit_price_usd: UsdAmount = Field(description="USD per unit, a decimal string.")
    effective_from: UtcDatetime | None = Field(
        default=None, description="From when the price applies (default: now)."
    )


class PriceOut(BaseModel):
    object: Literal["price"] = Field(default="price", description="Always price.")
    id: uuid.UUID = Field(description="The price's id.")
    model: str = Field(description="The model's id.")
    unit: str = Field(description="What one unit is.")
    unit_price_usd: str = Field(description="USD per unit, a decimal string.")
    effective_from: datetime = Field(description="From when the price applies.")
