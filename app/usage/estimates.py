"""What a job will probably cost, before it runs: the amount reserved against the budget.

Kling is a flat price per video. ThinkSound bills compute seconds, known only after the run, so
the estimate is the video's duration × the compute seconds per video second learnt from this
gateway's settled jobs (a configured default until enough jobs are seen). Output-second models
(MMAudio, Mirelo, Sonilo) bill what the payload asks for: the output length the gateway sends
(the video's measured length; before it is measured, the default video length) × the samples;
per-sample prices bill the samples.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.catalog.registry import ModelSpec
from app.config import Settings
from app.kit.clock import utcnow
from app.kit.money import cost_micros
from app.kit.ttlcache import TTLCache
from app.models import Job, JobStatus, UsageRecord, UsageStatus
from app.usage.prices import price_at

LEARN_FROM_LAST = 200

# Estimates run on every job creation; the price in force and the learned ratio change rarely,
# so each API process keeps them briefly. Settlement never uses these: it reads the price exactly.
PRICE_CACHE: TTLCache[tuple[str, int] | None] = TTLCache(ttl_s=30)
RATIO_CACHE: TTLCache[tuple[Decimal, str]] = TTLCache(ttl_s=60)


@dataclass(frozen=True)
class Estimate:
    model: str
    unit: str
    units: Decimal
    unit_price_micros: int | None
    cost_micros: int | None  # None: no price in force (the job is refused, never reserved at $0)
    video_duration_s: float | None
    basis: str


async def compute_seconds_per_video_second(
    session: AsyncSession, model: str, settings: Settings
) -> tuple[Decimal, str]:
    """The mean ratio over the model's last settled successful jobs with a known duration."""
    recent = (
        select(
            UsageRecord.units.label("units"),
            Job.result["video"]["duration_s"].as_float().label("dur"),
        )
        .join(Job, Job.id == UsageRecord.job_id)
        .where(
            UsageRecord.model == model,
            UsageRecord.status == UsageStatus.settled,
            UsageRecord.units > 0,
            Job.status == JobStatus.succeeded,
        )
        .order_by(UsageRecord.settled_at.desc())
        .limit(LEARN_FROM_LAST)
        .subquery()
    )
    row = (
        await session.execute(
            select(func.count(), func.sum(recent.c.units), func.sum(recent.c.dur)).where(
                recent.c.dur > 0
            )
        )
    ).one()
    count, units, seconds = row
    if count and count >= settings.estimate_min_samples and seconds:
        return (Decimal(units) / Decimal(str(seconds))).quantize(Decimal("0.0001")), "learned"
    return Decimal(str(settings.estimate_compute_per_video_second)), "default"


async def estimate_job(
    session: AsyncSession,
    spec: ModelSpec,
    settings: Settings,
    *,
    video_duration_s: float | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Estimate:
    """``payload``: the job's fal payload (how many samples it asks for)."""

    async def load_price() -> tuple[str, int] | None:
        price = await price_at(session, spec.id, utcnow())
        return (price.unit, price.unit_price_micros) if price else None

    price = await PRICE_CACHE.get_or_load(spec.id, load_price)
    ratio = None
    if _unit(spec, price) == "compute_second":
        ratio = await RATIO_CACHE.get_or_load(
            spec.id, lambda: compute_seconds_per_video_second(session, spec.id, settings)
        )
    return _estimate(spec, settings, price, ratio, video_duration_s, payload)


def estimate_from_cache(
    spec: ModelSpec,
    settings: Settings,
    *,
    video_duration_s: float | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Estimate | None:
    """The estimate when everything it needs is cached (no database); None otherwise."""
    fresh, price = PRICE_CACHE.peek(spec.id)
    if not fresh:
        return None
    ratio = None
    if _unit(spec, price) == "compute_second":
        fresh, ratio = RATIO_CACHE.peek(spec.id)
        if not fresh:
            return None
    return _estimate(spec, settings, price, ratio, video_duration_s, payload)


def _unit(spec: ModelSpec, price: tuple[str, int] | None) -> str:
    return price[0] if price else spec.pricing.unit


def _estimate(
    spec: ModelSpec,
    settings: Settings,
    price: tuple[str, int] | None,
    ratio: tuple[Decimal, str] | None,
    video_duration_s: float | None,
    payload: Mapping[str, Any] | None,
) -> Estimate:
    unit = _unit(spec, price)
    duration = video_duration_s
    if (ratio is not None or unit == "output_second") and duration is None:
        duration = settings.estimate_default_video_s
    output_units = None
    if unit in ("output_second", "sample"):
        quantity = spec.output_quantity(spec.payload_for_probe(payload or {}, duration))
        if unit == "sample":
            output_units = Decimal(quantity.samples)
        else:
            seconds = quantity.seconds_per_sample
            if seconds is None:  # a model without an output-length field: the video's
                seconds = Decimal(str(duration))
            output_units = seconds * quantity.samples
    return _computed(spec.id, unit, price, ratio, duration, output_units)


@functools.lru_cache(maxsize=1024)
def _computed(
    model: str,
    unit: str,
    price: tuple[str, int] | None,
    ratio: tuple[Decimal, str] | None,
    duration: float | None,
    output_units: Decimal | None,
) -> Estimate:
    # Decimal arithmetic on every job creation, for a handful of distinct answers (most jobs
    # give no duration): computed once each. Estimates are immutable, so they are shared.
    if output_units is not None:  # billed by what the payload asks for
        units, basis = output_units.quantize(Decimal("0.000001")), "requested"
    elif ratio is None:  # billed per video
        units, basis = Decimal(1), "flat"
    else:
        assert duration is not None
        units = (Decimal(str(duration)) * ratio[0]).quantize(Decimal("0.000001"))
        basis = ratio[1]
    cost = cost_micros(units, price[1]) if price else None
    return Estimate(
        model=model,
        unit=unit,
        units=units,
        unit_price_micros=price[1] if price else None,
        cost_micros=cost,
        video_duration_s=duration,
        basis=basis,
    )
