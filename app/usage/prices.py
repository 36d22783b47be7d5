"""Prices are data: a table with effective-from dates, seeded by the migration, editable by the
admin API and the CLI. A lookup always names the row it used (the price version)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import service as audit
from app.catalog.registry import CATALOG
from app.db.driver import driver_of
from app.kit.clock import utcnow
from app.kit.problems import Conflict, InputValidationError
from app.models import Price
from app.usage.billing import CACHE_HIT

HIT_UNIT = "hit"


class PriceExists(Conflict):
    code = "price_exists"


_PRICE_AT = """
    SELECT id, model, unit, unit_price_micros, effective_from, created_at FROM prices
    WHERE model = $1 AND effective_from <= $2 ORDER BY effective_from DESC LIMIT 1
"""


async def price_at(
    executor: AsyncSession | asyncpg.Connection, model: str, at: datetime
) -> Price | None:
    """The price in force for ``model`` at ``at`` (a detached row: prices are never changed,
    only added). On a session's connection or a raw one (the jobs store's settlements)."""
    conn = await driver_of(executor)
    row = await conn.fetchrow(_PRICE_AT, model, at)
    return None if row is None else Price(**dict(row))


async def list_prices(session: AsyncSession, model: str | None = None) -> Sequence[Price]:
    """Every price, or one model's: by its id or an alias (a name the catalog does not know
    still matches rows stored under it)."""
    stmt = select(Price).order_by(Price.model, Price.effective_from)
    if model:
        spec = CATALOG.resolve(model)
        stmt = stmt.where(Price.model == (spec.id if spec else model))
    return (await session.scalars(stmt)).all()


async def add_price(
    session: AsyncSession,
    *,
    model: str,
    unit: str,
    unit_price_micros: int,
    effective_from: datetime | None = None,
    actor: str = "admin",
) -> Price:
    """A price for a model of the catalog (an alias is stored as the model's id), or for
    ``cache_hit`` (what a result-cache hit costs): a price for a model the gateway cannot call
    would never be used, so it is refused (unknown_model)."""
    if unit_price_micros < 0:
        raise ValueError("a price cannot be negative")
    # A result-cache hit is priced as the pseudo-model "cache_hit" (app.usage.ledger).
    model = model if model == CACHE_HIT else CATALOG.require(model).id
    if (model == CACHE_HIT) != (unit == HIT_UNIT):
        raise InputValidationError(
            [
                {
                    "param": "unit",
                    "code": "invalid_unit",
                    "message": f"cache_hit is priced per {HIT_UNIT}, and only it is",
                }
            ]
        )
    when = effective_from or utcnow()
    existing = await session.scalar(
        select(Price.id).where(Price.model == model, Price.effective_from == when)
    )
    if existing is not None:
        raise PriceExists(
            f"{model} already has a price from {when.isoformat()}.", param="effective_from"
        )
    price = Price(
        id=uuid.uuid4(),
        model=model,
        unit=unit,
        unit_price_micros=unit_price_micros,
        effective_from=when,
    )
    session.add(price)
    await session.flush()
    await audit.record(
        session,
        actor=actor,
        action="price.create",
        target_type="price",
        target_id=price.id,
        before=None,
        after={
            "model": model,
            "unit": unit,
            "unit_price_micros": unit_price_micros,
            "effective_from": when.isoformat(),
        },
    )
    return price
